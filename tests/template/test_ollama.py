"""The Ollama TEMPLATE of every chat-template family renders byte for byte what the HF template does.

HF side: the real chat templates llama.cpp vendors (llama-cpp-python 0.3.36 sdist,
vendor/llama.cpp/models/templates/*.jinja), rendered by transformers' own Jinja renderer
(render_jinja_template: sandboxed, trim_blocks, lstrip_blocks, raise_exception, strftime_now) with
the family's bos/eos tokens and hf_kwargs; the few families llama.cpp does not vendor use the
hub template text quoted below. add_bos comes from the vendored ggml-vocab-*.gguf where there is
one (the key, else llama.cpp's per-vocab default), else from the model's published GGUFs.

Go side: jinmei/template/go/ollama_render.go, Go's text/template fed the data Ollama's server builds.
The check is go_render(...) == expected_go_render(HF render, bos_token, add_bos) (jinmei/template/ollama.py
says why a BOS the GGUF adds must be absent from the TEMPLATE).

Templates: $JINMEI_LLAMA_VENDOR or build/llama-vendor/ (folder holding models/templates and
models/ggml-vocab-*.gguf). Without Go or that folder the tests skip, except under CI, where they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import pytest

from jinmei.template import ollama
from jinmei.template.ollama import FAMILIES, OllamaError, detect_family, expected_go_render, go_render, modelfile_text

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def vendor() -> Path:
    path = Path(os.environ.get("JINMEI_LLAMA_VENDOR", ROOT / "build" / "llama-vendor"))
    if not (path / "models" / "templates").is_dir():
        unavailable(f"{path}/models/templates not found: extract vendor/llama.cpp/models of the "
                    "llama-cpp-python 0.3.36 sdist there (the setup script does), or set JINMEI_LLAMA_VENDOR")
    return path


@pytest.fixture(scope="module")
def go() -> None:
    if shutil.which(os.environ.get("GO", "go")) is None:
        unavailable("`go` is not installed (apt-get install golang-go): Ollama TEMPLATE renders "
                    "cannot be checked without Go's text/template")
    ollama.render_binary()


# ---------------------------------------------------------------- HF templates not vendored by llama.cpp

PLAIN_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                "{% endif %}")
# google/gemma-3-*-it tokenizer_config.json chat_template (Gemma 3 text models).
GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""
# microsoft/phi-4 tokenizer_config.json chat_template.
PHI4 = ("{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + "
        "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + "
        "message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant"
        "<|im_sep|>' + message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}")
# llm-jp/llm-jp-3-*-instruct tokenizer_config.json chat_template (also llm-jp's own SFT examples).
LLM_JP3 = ("{{bos_token}}{% for message in messages %}{% if message['role'] == 'user' %}{{ '\\n\\n### 指示:\\n' + "
           "message['content'] }}{% elif message['role'] == 'system' %}{{ '以下は、タスクを説明する指示です。"
           "要求を適切に満たす応答を書きなさい。' }}{% elif message['role'] == 'assistant' %}{{ '\\n\\n### 応答:\\n' + "
           "message['content'] + eos_token }}{% endif %}{% if loop.last and add_generation_prompt %}"
           "{{ '\\n\\n### 応答:\\n' }}{% endif %}{% endfor %}")


def smollm2_template() -> str:
    try:
        from jinmei.model.basemodel import SMOLLM2_CHAT_TEMPLATE
    except ImportError as e:  # the package is being restructured; the other ChatML cases still run
        pytest.skip(f"jinmei.model.basemodel not importable ({e})")
    return SMOLLM2_CHAT_TEMPLATE


@dataclass(frozen=True)
class Case:
    template: str                 # a vendored file's stem, or "inline:<NAME>"
    family: str
    bos: str | None
    eos: str
    add_bos: str | bool           # a vendored ggml-vocab file, or the value of the model's GGUFs
    merge_system: bool = False    # the HF template has no system role: give it the Gemma 3 merged form


CASES = [
    Case("Qwen-Qwen2.5-7B-Instruct", "chatml", None, "<|im_end|>", "ggml-vocab-qwen2.gguf"),
    Case("inline:PLAIN_CHATML", "chatml", None, "<|im_end|>", "ggml-vocab-qwen2.gguf"),
    Case("inline:SMOLLM2", "chatml", "<|im_start|>", "<|im_end|>", False),  # jinmei sets add_bos_token False
    Case("Qwen-Qwen3-0.6B", "qwen3", None, "<|im_end|>", "ggml-vocab-qwen2.gguf"),
    Case("HuggingFaceTB-SmolLM3-3B", "smollm3", None, "<|im_end|>", False),
    Case("meta-llama-Llama-3.1-8B-Instruct", "llama3", "<|begin_of_text|>", "<|eot_id|>", "ggml-vocab-llama-bpe.gguf"),
    Case("meta-llama-Llama-3.2-3B-Instruct", "llama3", "<|begin_of_text|>", "<|eot_id|>", "ggml-vocab-llama-bpe.gguf"),
    Case("meta-llama-Llama-3.3-70B-Instruct", "llama3", "<|begin_of_text|>", "<|eot_id|>", "ggml-vocab-llama-bpe.gguf"),
    Case("google-gemma-2-2b-it", "gemma", "<bos>", "<eos>", True, merge_system=True),
    Case("inline:GEMMA3", "gemma", "<bos>", "<eos>", True),
    Case("google-gemma-4-31B-it", "gemma4", "<bos>", "<eos>", "ggml-vocab-gemma-4.gguf"),
    Case("google-gemma-4-31B-it-interleaved", "gemma4", "<bos>", "<eos>", "ggml-vocab-gemma-4.gguf"),
    Case("mistralai-Mistral-Nemo-Instruct-2407", "mistral", "<s>", "</s>", True),
    Case("mistralai-Ministral-3-14B-Reasoning-2512", "mistral-system-prompt", "<s>", "</s>", True),
    Case("Mistral-Small-3.2-24B-Instruct-2506", "mistral-system-prompt", "<s>", "</s>", True),
    Case("unsloth-mistral-Devstral-Small-2507", "mistral-system-prompt", "<s>", "</s>", True),
    Case("microsoft-Phi-3.5-mini-instruct", "phi3", "<s>", "<|endoftext|>", "ggml-vocab-phi-3.gguf"),
    Case("inline:PHI4", "phi4", "<|endoftext|>", "<|im_end|>", False),
    Case("ibm-granite-granite-3.3-2B-Instruct", "granite", "<|end_of_text|>", "<|end_of_text|>", False),
    Case("ibm-granite-granite-4.0", "granite", "<|end_of_text|>", "<|end_of_text|>", False),
    Case("ibm-granite-granite-4.1", "granite", "<|end_of_text|>", "<|end_of_text|>", False),
    Case("inline:LLM_JP3", "llm-jp", "<s>", "</s>", True, merge_system=True),
]

SYSTEM_EN = "You extract the names of people from a news article. Answer with JSON only."
SYSTEM_JA = "あなたはニュース記事から人名を抽出します。JSONだけで答えてください。"
ARTICLE = ("東京都港区の会社員、山田太郎さん(45)が2026年11月24日に逮捕された。\n\n"
           "警視庁によると、山田容疑者は「覚えていない」と話している。\n"
           "Tel 03-1234-5678; it's  OK!\tｶﾀｶﾅ ＡＢＣ １２３")
ANSWER = '{"persons":[{"name":"山田太郎","act":"逮捕"}]}'
CONVERSATIONS = {
    "system+user": (SYSTEM_EN, [{"role": "user", "content": "Taro Yamada (45) was arrested on Monday."}]),
    "multi-turn": (SYSTEM_EN, [{"role": "user", "content": "Taro Yamada was arrested."},
                               {"role": "assistant", "content": '{"persons":[{"name":"Taro Yamada"}]}'},
                               {"role": "user", "content": "Hanako Sato was released."}]),
    "japanese": (SYSTEM_JA, [{"role": "user", "content": "山田太郎さんが逮捕された。"}]),
    "article": (SYSTEM_JA, [{"role": "user", "content": ARTICLE}, {"role": "assistant", "content": ANSWER},
                            {"role": "user", "content": "次の記事:\n佐藤花子さんが釈放された。"}]),
}
FIXED_DAY = datetime(2024, 7, 26, 9, 30)   # what strftime_now returns (Llama 3.2, Granite, Mistral Small)


def hf_template(case: Case, vendor: Path) -> str:
    if case.template == "inline:SMOLLM2":
        return smollm2_template()
    if case.template.startswith("inline:"):
        return globals()[case.template.split(":", 1)[1]]
    return (vendor / "models" / "templates" / f"{case.template}.jinja").read_text(encoding="utf-8")


def hf_render(template: str, system: str, messages: list[dict], case: Case, monkeypatch, day=FIXED_DAY,
              family_kwargs: bool = True) -> str:
    """transformers' own renderer, with strftime_now pinned to `day` (and the family's hf_kwargs)."""
    from transformers.utils import chat_template_utils

    class Pinned(datetime):
        @classmethod
        def now(cls, tz=None):
            return day

    monkeypatch.setattr(chat_template_utils, "datetime", Pinned)
    if case.merge_system:
        first = dict(messages[0], content=f"{system}\n\n{messages[0]['content']}")
        conversation = [first, *messages[1:]]
    else:
        conversation = [{"role": "system", "content": system}, *messages]
    family = FAMILIES[case.family]
    special = {"bos_token": case.bos or "", "eos_token": case.eos}
    rendered, _ = chat_template_utils.render_jinja_template(
        conversations=[conversation], chat_template=template, add_generation_prompt=True,
        **special, **(family.template_kwargs if family_kwargs else {}))
    return rendered[0]


# ---------------------------------------------------------------- add_bos as llama.cpp sees it

@lru_cache(maxsize=None)
def gguf_kv(path: Path) -> dict:
    """The scalar and string metadata of a GGUF (arrays skipped): enough for the tokenizer flags."""
    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    out = {}
    with path.open("rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(read("Q")).decode("utf-8", "replace")

        def value(kind):
            if kind in scalars:
                return read(scalars[kind])
            if kind == 8:
                return string()
            if kind == 9:
                item, n = read("I"), read("Q")
                if item in scalars:
                    f.seek(n * struct.calcsize(scalars[item]), 1)
                else:
                    for _ in range(n):
                        value(item)
                return None
            raise ValueError(f"{path}: unknown GGUF value type {kind}")

        assert f.read(4) == b"GGUF", path
        read("I"), read("Q")
        for _ in range(read("Q")):
            key = string()
            out[key] = value(read("I"))
    return out


# llama.cpp src/llama-vocab.cpp: pre-tokenizers that default add_bos to true (the LLAMA3 group)
LLAMA3_PRES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
               "jina-v5-nano"}


def add_bos_of(case: Case, vendor: Path) -> bool:
    if isinstance(case.add_bos, bool):
        return case.add_bos
    kv = gguf_kv(vendor / "models" / case.add_bos)
    if "tokenizer.ggml.add_bos_token" in kv:
        flag = bool(kv["tokenizer.ggml.add_bos_token"])
    else:
        model, pre = kv.get("tokenizer.ggml.model"), kv.get("tokenizer.ggml.pre")
        flag = model in ("llama", "bert") or (model == "gpt2" and pre in LLAMA3_PRES)
    if kv.get("tokenizer.ggml.model") == "gemma4":
        flag = True   # llama.cpp forces it on for Gemma 4 (and Ollama knows)
    return flag


# ---------------------------------------------------------------- the byte-for-byte check

@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("case", CASES, ids=[c.template.replace("inline:", "") for c in CASES])
def test_go_template_renders_the_hf_template(case, conversation, vendor, go, monkeypatch):
    family = FAMILIES[case.family]
    system, messages = CONVERSATIONS[conversation]
    hf = hf_render(hf_template(case, vendor), system, messages, case, monkeypatch)
    assert detect_family(hf) is family, f"detected {detect_family(hf)} in {hf[:200]!r}"
    expected = expected_go_render(hf, case.bos, add_bos_of(case, vendor))
    got = go_render(family.go_template, {"system": system, "messages": messages})
    assert got.encode("utf-8") == expected.encode("utf-8"), f"\nHF: {hf!r}\nGo: {got!r}"


def test_every_family_is_checked():
    assert {c.family for c in CASES} == set(FAMILIES)


def test_bos_rule_matches_the_vocab(vendor):
    """The templates that emit a BOS the GGUF adds lose it; the others are reproduced whole."""
    by_name = {c.template: c for c in CASES}
    assert add_bos_of(by_name["meta-llama-Llama-3.1-8B-Instruct"], vendor) is True
    assert add_bos_of(by_name["Qwen-Qwen2.5-7B-Instruct"], vendor) is False
    assert add_bos_of(by_name["google-gemma-4-31B-it"], vendor) is True
    assert add_bos_of(by_name["microsoft-Phi-3.5-mini-instruct"], vendor) is True
    assert expected_go_render("<|begin_of_text|>x", "<|begin_of_text|>", True) == "x"
    assert expected_go_render("<|begin_of_text|>x", "<|begin_of_text|>", False) == "<|begin_of_text|>x"
    assert expected_go_render("<|user|>x", "<s>", True) == "<|user|>x"


@pytest.mark.parametrize("case", [c for c in CASES if isinstance(c.add_bos, str)],
                         ids=[c.template for c in CASES if isinstance(c.add_bos, str)])
def test_tokens_under_ollama(case, vendor, go, monkeypatch):
    """With the real vocab: the tokens Ollama feeds the model (llama-server adds BOS as the GGUF says)
    are the tokens HF's apply_chat_template(tokenize=True) gives (no added specials), except that
    a BOS-adding GGUF whose template emits none (Phi-3) gets one more leading BOS, as under llama.cpp."""
    llama_cpp = pytest.importorskip("llama_cpp")
    family = FAMILIES[case.family]
    system, messages = CONVERSATIONS["article"]
    hf = hf_render(hf_template(case, vendor), system, messages, case, monkeypatch)
    vocab = llama_cpp.Llama(model_path=str(vendor / "models" / case.add_bos), vocab_only=True, verbose=False)
    try:
        intended = vocab.tokenize(hf.encode(), add_bos=False, special=True)
        served = vocab.tokenize(go_render(family.go_template, {"system": system, "messages": messages}).encode(),
                                add_bos=True, special=True)
        bos = vocab.token_bos()
    finally:
        vocab.close()
    if case.bos and hf.startswith(case.bos) or not add_bos_of(case, vendor):
        assert served == intended
    else:
        assert served == [bos, *intended]


def test_llama32_needs_a_pinned_date(vendor, go, monkeypatch):
    """Llama 3.2 dates its system turn with strftime_now: only date_string keeps the render fixed."""
    case = next(c for c in CASES if c.template == "meta-llama-Llama-3.2-3B-Instruct")
    template = hf_template(case, vendor)
    system, messages = CONVERSATIONS["system+user"]
    later = datetime(2026, 12, 1)
    free = hf_render(template, system, messages, case, monkeypatch, day=later, family_kwargs=False)
    assert "Today Date: 01 Dec 2026" in free    # no date_string: the template's strftime_now branch...
    pinned = hf_render(template, system, messages, case, monkeypatch, day=later)
    assert "Today Date: 26 Jul 2024" in pinned   # ...and what the family's hf_kwargs give on any day
    got = go_render(FAMILIES["llama3"].go_template, {"system": system, "messages": messages})
    assert got == expected_go_render(pinned, case.bos, True) != expected_go_render(free, case.bos, True)


def test_ollama_data_shape(go):
    """Modelfile SYSTEM goes first unless the request brings its own; same-role turns merge."""
    t = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}|{{ .System }}"
    assert go_render(t, {"system": "S", "messages": [{"role": "user", "content": "a"},
                                                      {"role": "user", "content": "b"}]}) == "[system:S][user:a\n\nb]|S"
    assert go_render(t, {"system": "S", "messages": [{"role": "system", "content": "R"},
                                                      {"role": "user", "content": "a"}]}) == "[system:R][user:a]|R"
    legacy = "{{ if .System }}<{{ .System }}>{{ end }}{{ .Prompt }}="
    assert go_render(legacy, {"system": "S", "messages": [{"role": "user", "content": "a"},
                                                           {"role": "assistant", "content": "b"},
                                                           {"role": "user", "content": "c"}]}) == "<S>a=bc="
    assert go_render(legacy, {"system": "S", "prompt": "p"}) == "<S>p="


def test_go_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GO", "/nonexistent/go")
    ollama.render_binary.cache_clear()
    try:
        with pytest.raises(OllamaError, match="apt-get install golang-go"):
            go_render("{{ .Prompt }}", {"prompt": "x"})
    finally:
        monkeypatch.undo()
        ollama.render_binary.cache_clear()


def test_detect_family_unknown():
    assert detect_family("### Instruction:\nhello\n### Response:\n") is None


def test_modelfile_text():
    text = modelfile_text(FAMILIES["chatml"], "m-Q4_K_M.gguf", SYSTEM_JA)
    assert text == ("FROM ./m-Q4_K_M.gguf\n"
                    f'TEMPLATE """{FAMILIES["chatml"].go_template}"""\n'
                    f'SYSTEM """{SYSTEM_JA}"""\n'
                    "PARAMETER temperature 0\n"
                    'PARAMETER stop "<|im_start|>"\n'
                    'PARAMETER stop "<|im_end|>"\n')
    for family in FAMILIES.values():
        modelfile_text(family, "m.gguf", SYSTEM_EN)


@pytest.mark.parametrize("system, message", [
    ('say """hi"""', '"""'),
    ("", "empty"),
    ("全角\u3000スペース", "U+3000 IDEOGRAPHIC SPACE"),
    ("zero\u200bwidth", "U+200B"),
])
def test_modelfile_refuses(system, message):
    with pytest.raises(OllamaError, match=re.escape(message)):
        modelfile_text(FAMILIES["chatml"], "m.gguf", system)
    with pytest.raises(ValueError):
        modelfile_text(FAMILIES["chatml"], "m.gguf", system)


def test_modelfile_refuses_what_a_family_rewrites():
    with pytest.raises(OllamaError, match="whitespace"):
        modelfile_text(FAMILIES["llama3"], "m.gguf", SYSTEM_EN + "\n")
    with pytest.raises(OllamaError, match="/no_think"):
        modelfile_text(FAMILIES["smollm3"], "m.gguf", "Be brief. /no_think")
