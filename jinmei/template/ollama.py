"""Ollama Modelfiles per chat-template family: the Go TEMPLATE, stops, and a Go renderer.

A fine-tuned model answers well only if it sees at inference exactly the token sequence it was
trained on. Under Ollama that sequence comes from the Modelfile's TEMPLATE (Go text/template),
not from the HF chat template, so each family below carries a Go template whose render is
byte-identical to the HF template's render, checked by tests/template/test_ollama.py against the real
templates that llama.cpp vendors (models/templates/*.jinja), rendered the way transformers does.

What the Go render must equal (the rule the tests check, and `expected_go_render`):

    The model sees, under Ollama:  [BOS if add_bos] + tokenize(R, parse_special)
    where R is the Go render. Ollama >= 0.30 hands R to llama-server's /completion, which
    tokenizes with add_special=true, so BOS is added iff the GGUF's vocab says add_bos
    (tokenizer.ggml.add_bos_token, or llama.cpp's per-vocab default when the key is absent);
    Ollama itself only strips a literal leading "<bos>" first (llm/llama_server.go
    completionPrompt). Older Ollama did the same in its own runner (runner/llamarunner:
    Tokenize(prompt, addSpecial=true, parseSpecial=true)).
    llama.cpp's own chat path (common/chat.cpp, the GGUF's tokenizer.chat_template rendered
    with Jinja) feeds the tokenizer the HF render H minus a leading bos_token text when
    add_bos, and then adds BOS the same way.
    So:  R == H[len(bos_token):]  if add_bos and H starts with bos_token,  else  R == H.

In words: when the GGUF adds BOS, the Go template must NOT emit it (Llama-3's <|begin_of_text|>,
Gemma's <bos>, Mistral's and llm-jp's <s>), or the model sees two; a template that emits no BOS
(ChatML, Phi) is reproduced as is, and gets a BOS from llama.cpp exactly when the GGUF says so
(Phi-3's SentencePiece vocab does; HF's apply_chat_template(tokenize=True) would not add one:
that difference is the GGUF's, identical under llama.cpp and Ollama, and no TEMPLATE can undo it).
The project's llama.cpp engine must follow the same rule: tokenizing H itself with add_bos=True
gives two BOS for Llama-3/Gemma/Mistral.

Ollama's data shape (template/template.go, server/routes.go; jinmei/template/go/ollama_render.go has the
details): the Modelfile SYSTEM becomes a first {"role": "system"} message when the request's first
message is not a system one; .Messages holds every message (system ones included, consecutive
same-role messages merged with "\\n\\n"), .System all system contents joined with "\\n\\n",
.Prompt/.Response only for templates that never name .Messages (one execution per turn).

Note: Ollama >= 0.30 prefers the GGUF's own tokenizer.chat_template (rendered natively by
llama-server) over the Modelfile TEMPLATE when the chat template advertises more capabilities
(tools, thinking: server/images.go shouldPreferChatTemplate), which is the case for most HF
templates here; OLLAMA_GO_TEMPLATE=1 forces the TEMPLATE (read at ollama fb30760, v0.33). The
native render is not checked here, and it cannot follow hf_kwargs: Llama 3.2 there dates its
system turn with today, and Qwen3/SmolLM3 get whatever Ollama's think option maps to, not
enable_thinking=False. Serve with OLLAMA_GO_TEMPLATE=1 to get the render verified here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from jinmei.errors import JinmeiError

GO_DIR = Path(__file__).resolve().parent / "go"
GO_SOURCE = GO_DIR / "ollama_render.go"
REPO_ROOT = Path(__file__).resolve().parents[2]
GO_INSTALL_HINT = "install Go (Debian/Ubuntu: `apt-get install golang-go`, Go >= 1.19)"


class OllamaError(JinmeiError, ValueError):
    """A Modelfile jinmei refuses to write, or a Go render that failed (one line for the user)."""


@dataclass(frozen=True)
class Family:
    name: str
    go_template: str                    # Ollama Go text/template TEMPLATE text
    stops: tuple[str, ...]              # PARAMETER stop values
    system_role: bool                   # False: no system turn; the system text goes where HF puts it
    markers: tuple[str, ...]            # all present in a rendered probe -> this family (detect_family)
    verified: tuple[str, ...]           # the HF templates tests/template/test_ollama.py checks it against
    hf_kwargs: tuple[tuple[str, Any], ...] = ()  # apply_chat_template kwargs the render assumes
    trims: str = ""                     # "strip"/"rstrip": HF trims content (Go cannot): pre-trim it
    system_forbids: tuple[str, ...] = ()  # substrings the HF template rewrites in a system prompt
    notes: str = ""
    adds_bos: bool = False              # the go_template assumes llama.cpp adds the template's BOS (vocab default)

    @property
    def template_kwargs(self) -> dict[str, Any]:
        return dict(self.hf_kwargs)


# Every Go template assumes a system message first (the Modelfile's SYSTEM is always set:
# modelfile_text refuses an empty one), because most HF templates put a default system prompt,
# some of them date-dependent, where none is given.
_CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n"
           "{{ .Content }}<|im_end|>\n"
           "{{ end }}<|im_start|>assistant\n")
_CHATML_STOPS = ("<|im_start|>", "<|im_end|>")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        name="llama3",
        adds_bos=True,
        go_template=(
            "<|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
            '{{ if .Messages }}{{ with index .Messages 0 }}{{ if eq .Role "system" }}{{ .Content }}'
            "{{ end }}{{ end }}{{ end }}<|eot_id|>"
            '{{ range $i, $m := .Messages }}{{ if or $i (ne $m.Role "system") }}'
            "<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n{{ $m.Content }}<|eot_id|>"
            "{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"),
        stops=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        system_role=True,
        markers=("<|start_header_id|>",),
        verified=("meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
                  "meta-llama-Llama-3.3-70B-Instruct"),
        hf_kwargs=(("date_string", "26 Jul 2024"),),
        trims="strip",
        notes="The system turn always carries 'Today Date': Llama 3.1/3.3 default it to 26 Jul 2024; "
              "Llama 3.2 uses strftime_now (today), so training and evaluation must pass "
              "date_string='26 Jul 2024' (hf_kwargs) or its renders drift with the calendar. "
              "HF trims system and content."),
    Family(
        name="gemma4",
        adds_bos=True,
        go_template=(
            '{{- range .Messages }}{{ if eq .Role "assistant" }}<|turn>model\n'
            "{{ else }}<|turn>{{ .Role }}\n{{ end }}{{ .Content }}<turn|>\n"
            "{{ end }}<|turn>model\n<|channel>thought\n<channel|>"),
        stops=("<turn|>", "<|turn>"),
        system_role=True,
        markers=("<|turn>",),
        verified=("google-gemma-4-31B-it", "google-gemma-4-31B-it-interleaved"),
        trims="strip",
        notes="Thinking off (enable_thinking unset): the generation prompt carries an empty "
              "thought channel. HF trims system and content."),
    Family(
        name="gemma",
        adds_bos=True,
        go_template=(
            '{{- $prefix := "" }}{{ range $i, $m := .Messages }}'
            '{{ if and (eq $i 0) (eq $m.Role "system") }}{{ $prefix = printf "%s\\n\\n" $m.Content }}'
            '{{ else if eq $m.Role "assistant" }}<start_of_turn>model\n{{ $m.Content }}<end_of_turn>\n'
            "{{ else }}<start_of_turn>{{ $m.Role }}\n{{ $prefix }}{{ $m.Content }}<end_of_turn>\n"
            '{{ $prefix = "" }}{{ end }}{{ end }}<start_of_turn>model\n'),
        stops=("<start_of_turn>", "<end_of_turn>"),
        system_role=False,
        markers=("<start_of_turn>",),
        verified=("google-gemma-2-2b-it (system merged into the first user turn)",
                  "gemma-3 (hub template text)"),
        trims="strip",
        notes="No system turn: Gemma 3's template prepends 'system\\n\\n' to the first user turn; "
              "Gemma 2's raises on a system message, so its conversation must be given that "
              "merged form. HF trims content (not the system text)."),
    Family(
        name="mistral-system-prompt",
        adds_bos=True,
        go_template=(
            '{{- range .Messages }}{{ if eq .Role "system" }}[SYSTEM_PROMPT]{{ .Content }}[/SYSTEM_PROMPT]'
            '{{ else if eq .Role "user" }}[INST]{{ .Content }}[/INST]'
            '{{ else if eq .Role "assistant" }}{{ .Content }}</s>{{ end }}{{ end }}'),
        stops=("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "</s>"),
        system_role=True,
        markers=("[SYSTEM_PROMPT]",),
        verified=("mistralai-Ministral-3-14B-Reasoning-2512", "Mistral-Small-3.2-24B-Instruct-2506",
                  "unsloth-mistral-Devstral-Small-2507"),
        notes="No generation prompt: the model writes right after [/INST]."),
    Family(
        name="mistral",
        adds_bos=True,
        go_template=(
            '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}[INST]'
            '{{ if and (eq (len (slice $.Messages $i)) 1) (eq (index $.Messages 0).Role "system") }}'
            "{{ (index $.Messages 0).Content }}\n\n{{ end }}{{ $m.Content }}[/INST]"
            '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}</s>{{ end }}{{ end }}'),
        stops=("[INST]", "[/INST]", "</s>"),
        system_role=False,
        markers=("[INST]",),
        verified=("mistralai-Mistral-Nemo-Instruct-2407",),
        notes="No system turn: the system text is prepended to the LAST message when it is a user "
              "one (a multi-turn render moves it). No generation prompt."),
    Family(
        name="phi4",
        go_template=(
            '{{- range .Messages }}{{ if or (eq .Role "system") (eq .Role "user") (eq .Role "assistant") }}'
            "<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>{{ end }}{{ end }}"
            "<|im_start|>assistant<|im_sep|>"),
        stops=("<|im_start|>", "<|im_end|>", "<|im_sep|>"),
        system_role=True,
        markers=("<|im_sep|>",),
        verified=("microsoft/phi-4 (hub template text; not vendored by llama.cpp)",)),
    Family(
        name="phi3",
        adds_bos=True,
        go_template=(
            '{{- range .Messages }}{{ if or (and (eq .Role "system") .Content) (eq .Role "user") '
            '(eq .Role "assistant") }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}{{ end }}'
            "<|assistant|>\n"),
        stops=("<|end|>", "<|system|>", "<|user|>", "<|assistant|>"),
        system_role=True,
        markers=("<|user|>", "<|end|>"),
        verified=("microsoft-Phi-3.5-mini-instruct",),
        notes="The template emits no BOS; a GGUF with add_bos (Phi-3's vocab has it) gets <s> "
              "from llama.cpp under Ollama and llama.cpp alike."),
    Family(
        name="granite",
        go_template=(
            "{{- range .Messages }}<|start_of_role|>{{ .Role }}<|end_of_role|>{{ .Content }}<|end_of_text|>\n"
            "{{ end }}<|start_of_role|>assistant<|end_of_role|>"),
        stops=("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"),
        system_role=True,
        markers=("<|start_of_role|>",),
        verified=("ibm-granite-granite-3.3-2B-Instruct", "ibm-granite-granite-4.0", "ibm-granite-granite-4.1"),
        notes="Granite 3.3's default system prompt (no system message) holds today's date."),
    Family(
        name="llm-jp",
        adds_bos=True,
        go_template=(
            '{{- $prefix := "" }}{{ range $i, $m := .Messages }}'
            '{{ if and (eq $i 0) (eq $m.Role "system") }}{{ $prefix = printf "%s\\n\\n" $m.Content }}'
            '{{ else if eq $m.Role "assistant" }}\n\n### 応答:\n{{ $m.Content }}</s>'
            '{{ else }}\n\n### 指示:\n{{ $prefix }}{{ $m.Content }}{{ $prefix = "" }}{{ end }}{{ end }}'
            "\n\n### 応答:\n"),
        stops=("</s>", "### 指示:", "### 応答:"),
        system_role=False,
        markers=("### 指示:",),
        verified=("llm-jp/llm-jp-3-*-instruct (hub template text; not vendored by llama.cpp), system text merged "
                  "into the first user turn",),
        notes="The HF template ignores a system message's content (it renders the fixed sentence "
              "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。), so jinmei puts the system text "
              "before the article in the user turn, and this TEMPLATE does the same with the Modelfile's SYSTEM."),
    Family(
        name="smollm3",
        go_template=(
            "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
            "Reasoning Mode: /no_think\n\n## Custom Instructions\n\n"
            '{{ if and .Messages (eq (index .Messages 0).Role "system") (index .Messages 0).Content }}'
            "{{ (index .Messages 0).Content }}\n\n"
            "{{ else }}You are a helpful AI assistant named SmolLM, trained by Hugging Face.\n\n{{ end }}"
            "<|im_end|>\n"
            '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
            '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n<think>\n\n</think>\n{{ .Content }}<|im_end|>\n'
            "{{ end }}{{ end }}<|im_start|>assistant\n<think>\n\n</think>\n"),
        stops=_CHATML_STOPS,
        system_role=True,
        markers=("<|im_start|>", "## Metadata", "Reasoning Mode: /no_think"),
        verified=("HuggingFaceTB-SmolLM3-3B",),
        hf_kwargs=(("enable_thinking", False),),
        trims="rstrip",
        system_forbids=("/think", "/no_think"),
        notes="Thinking off (enable_thinking=False). HF strips '/think' and '/no_think' out of the "
              "system text and rstrips it."),
    Family(
        name="qwen3",
        go_template=_CHATML + "<think>\n\n</think>\n\n",
        stops=_CHATML_STOPS,
        system_role=True,
        markers=("<|im_start|>", "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        verified=("Qwen-Qwen3-0.6B",),
        hf_kwargs=(("enable_thinking", False),),
        notes="Thinking off (enable_thinking=False): the generation prompt carries an empty think "
              "block; earlier assistant turns carry none."),
    Family(
        name="chatml",
        go_template=_CHATML,
        stops=_CHATML_STOPS,
        system_role=True,
        markers=("<|im_start|>",),
        verified=("Qwen-Qwen2.5-7B-Instruct", "SmolLM2 (jinmei.model.basemodel.SMOLLM2_CHAT_TEMPLATE)",
                  "plain ChatML")),
)}


def detect_family(rendered: str) -> Family | None:
    """The family whose markers all occur in `rendered`, an HF render of a probe conversation.

    Families are tried in table order, the more specific first (Qwen3 and SmolLM3 before ChatML).
    A match names the candidate only: compare go_render(family.go_template, ...) with
    expected_go_render(...) of the same conversation before trusting it.
    """
    for family in FAMILIES.values():
        if all(marker in rendered for marker in family.markers):
            return family
    return None


def expected_go_render(hf_render: str, bos_token: str | None, add_bos: bool) -> str:
    """What the family's Go render must equal, given the HF render of the same conversation.

    `add_bos` is what llama.cpp does with the GGUF (tokenizer.ggml.add_bos_token, else the vocab's
    default). See the module docstring for why.
    """
    if add_bos and bos_token and hf_render.startswith(bos_token):
        return hf_render[len(bos_token):]
    return hf_render


# ---------------------------------------------------------------- Modelfile

def _dropped_by_ollama(text: str) -> list[str]:
    """Characters Ollama's Modelfile parser silently drops (parser/parser.go keeps a rune only if
    strconv.IsPrint, i.e. Unicode L/M/N/P/S or ASCII space, or it is a tab or newline)."""
    bad = []
    for ch in dict.fromkeys(text):
        if ch in "\n\r\t " or unicodedata.category(ch)[0] in "LMNPS":
            continue
        bad.append(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}")
    return bad


def check_system(family: Family, system: str, where: str = "params.yaml prompt.system") -> None:
    """Refuse a system prompt the Modelfile cannot carry, or the family's Go template cannot
    reproduce the HF render of."""
    if not system:
        raise OllamaError(f"{where}: is empty; Ollama then sends no system message and most chat "
                          "templates put their own default (some with today's date) in its place")
    if '"""' in system:
        raise OllamaError(f'{where}: contains """, which an Ollama Modelfile cannot quote')
    bad = _dropped_by_ollama(system)
    if bad:
        raise OllamaError(f"{where}: contains {', '.join(bad)}, which Ollama's Modelfile parser "
                          "silently drops; replace it (an ASCII space for a wide space)")
    trimmed = {"strip": system.strip(), "rstrip": system.rstrip()}.get(family.trims, system)
    if trimmed != system:
        raise OllamaError(f"{where}: starts or ends with whitespace, which the {family.name} chat "
                          "template strips and its Ollama TEMPLATE cannot; remove it")
    for word in family.system_forbids:
        if word in system:
            raise OllamaError(f"{where}: contains {word!r}, which the {family.name} chat template "
                              "rewrites and its Ollama TEMPLATE cannot")


def modelfile_text(family: Family, gguf_name: str, system: str) -> str:
    """The Modelfile beside the GGUF: FROM, TEMPLATE, SYSTEM, temperature 0, the family's stops."""
    if not gguf_name or any(c in gguf_name for c in ' "\n\t/\\'):
        raise OllamaError(f"GGUF file name {gguf_name!r} must be a plain file name without spaces or quotes")
    check_system(family, system)
    template = family.go_template
    if '"""' in template or _dropped_by_ollama(template):
        raise OllamaError(f"the {family.name} TEMPLATE cannot be written into a Modelfile")
    for stop in family.stops:
        if '"' in stop or not stop:
            raise OllamaError(f"the {family.name} stop {stop!r} cannot be quoted in a Modelfile")
    lines = [f"FROM ./{gguf_name}",
             f'TEMPLATE """{template}"""',
             f'SYSTEM """{system}"""',
             "PARAMETER temperature 0"]
    lines += [f'PARAMETER stop "{stop}"' for stop in family.stops]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the Go renderer

def _go() -> str:
    go = shutil.which(os.environ.get("GO", "go"))
    if go is None:
        raise OllamaError(f"`go` was not found on PATH; rendering an Ollama TEMPLATE needs Go's own "
                          f"text/template: {GO_INSTALL_HINT}")
    return go


def _go_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0")
    if "GOCACHE" not in env and not env.get("HOME"):
        env["GOCACHE"] = str(cache / "gocache")
    return env


@lru_cache(maxsize=None)
def render_binary() -> Path:
    """The compiled renderer, built once per source and Go version under build/ollama-render/."""
    go = _go()
    cache = Path(os.environ.get("JINMEI_OLLAMA_RENDER_CACHE", REPO_ROOT / "build" / "ollama-render"))
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout.strip()
    digest = hashlib.sha256()
    for part in (GO_SOURCE.read_bytes(), (GO_DIR / "go.mod").read_bytes(), version.encode()):
        digest.update(part)
    binary = cache / digest.hexdigest()[:16] / "ollama-render"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        out = Path(tmp) / "ollama-render"
        done = subprocess.run([go, "build", "-trimpath", "-o", str(out), "."], cwd=GO_DIR,
                              env=_go_env(cache), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OllamaError(f"building {GO_SOURCE} with {version or go} failed ({GO_INSTALL_HINT}): "
                              f"{done.stderr.strip()}")
        os.replace(out, binary)     # atomic: a concurrent build of the same source is harmless
    return binary


def go_render(template: str, data: Mapping[str, Any]) -> str:
    """Render an Ollama TEMPLATE the way the Ollama server does (jinmei/template/go/ollama_render.go).

    data: {"system": Modelfile SYSTEM, "messages": [{"role", "content"}, ...] (a /api/chat
    request's messages), optional "tools", "think", "prompt" (/api/generate instead), "now"}.
    """
    payload = dict(data, template=template)
    done = subprocess.run([str(render_binary())], input=json.dumps(payload, ensure_ascii=False).encode(),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise OllamaError(f"rendering the Ollama TEMPLATE failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8")
