"""The prompt, as the base model's own chat template renders it: one source for training, eval, predict, the GGUF
and the Ollama Modelfile (its family's Go TEMPLATE, jinmei.template.ollama).

Two rules hold the pieces together:
- Text, not control tokens: a rendered conversation is cut at the template's own special-token strings (outside the
  system prompt, the article and the answer) and every other piece is tokenized with special-token parsing off, by
  transformers in training and by llama.cpp at inference. For an article without such strings the ids are those of
  plain tokenization; an article that contains, is, begins or ends with `<|im_end|>` stays text (`contents` finds
  each text's place by rendering a sentinel in its stead, never by searching the render for it).
- The end of an answer is the template's: the first token after the answer in the render (ChatML `<|im_end|>`,
  Llama-3 `<|eot_id|>`, Gemma `<end_of_turn>` ...) is supervised, and every decoder stops on it.
BOS is the template's too: models/base says add_bos_token false, so the GGUF adds none and the template's own BOS
text (Llama-3, Gemma, Mistral) is the only one, under transformers, llama.cpp and Ollama alike.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from jinmei.errors import JinmeiError
from jinmei.model.hfmodel import special_tokens
from jinmei.template.ollama import FAMILIES, Family, detect_family

PROBE_SYSTEM = "Extract persons as JSON."
PROBE_ARTICLE = "東京都港区の会社員、山田太郎さん(45)が逮捕された。\n二行目。"
PROBE_ANSWER = '{"persons":[{"name":"山田太郎","act":"逮捕","address":"東京都港区","signature":null}]}'
SUPPORTED = ", ".join(FAMILIES)


class TemplateError(JinmeiError):
    """A chat template the pipeline cannot serve end to end (training masks, GGUF, Ollama)."""


@dataclass(frozen=True)
class ChatFormat:
    template: str              # the Jinja chat template (models/base, then the GGUF's tokenizer.chat_template)
    family: Family
    bos_token: str | None
    eos_token: str | None
    merge_system: bool         # no system role: the system text goes before the article in the user turn

    @property
    def name(self) -> str:
        return self.family.name


@contextlib.contextmanager
def pinned_clock(day: _dt.datetime | None) -> Iterator[None]:
    """Renders with `strftime_now` (Llama-3.2) at a fixed day; None = the real clock."""
    if day is None:
        yield
        return
    from transformers.utils import chat_template_utils

    real = chat_template_utils.datetime

    class Fixed(real):
        @classmethod
        def now(cls, tz=None):
            return day

    chat_template_utils.datetime = Fixed
    try:
        yield
    finally:
        chat_template_utils.datetime = real


def _render_raw(template: str, conversation: list[dict[str, str]], generation_prompt: bool, bos: str | None,
                eos: str | None, kwargs: dict[str, Any]) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[conversation], chat_template=template,
                                        add_generation_prompt=generation_prompt, bos_token=bos or "",
                                        eos_token=eos or "", **kwargs)
    return rendered[0]


def messages(fmt: ChatFormat, system: str, article: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation the model sees; the family's trimming is applied first (Go templates cannot trim)."""
    if fmt.family.trims == "strip":
        system, article = system.strip(), article.strip()
    if fmt.merge_system:
        turns = [{"role": "user", "content": f"{system}\n\n{article}"}]
    else:
        turns = [{"role": "system", "content": system}, {"role": "user", "content": article}]
    return turns + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def render(fmt: ChatFormat, conversation: list[dict[str, str]], generation_prompt: bool,
           day: _dt.datetime | None = None) -> str:
    with pinned_clock(day):
        try:
            return _render_raw(fmt.template, conversation, generation_prompt, fmt.bos_token, fmt.eos_token,
                               fmt.family.template_kwargs)
        except Exception as e:  # a template's raise_exception or a jinja error: one line naming the family
            raise TemplateError(f"the {fmt.name} chat template refused the conversation: {e}") from e


def prompt_text(fmt: ChatFormat, system: str, article: str) -> str:
    return render(fmt, messages(fmt, system, article), generation_prompt=True)


class Content(str):
    """A user-supplied text of a render, with where the template put it: `from_end` characters before the end of
    the render (counted from the end, so a render whose leading BOS text was cut off still agrees)."""

    from_end: int | None = None

    def __new__(cls, text: str, from_end: int | None = None) -> "Content":
        self = super().__new__(cls, text)
        self.from_end = from_end
        return self


def _sentinel(i: int) -> str:
    """A text no template writes (Unicode's private use area), one per content; digits, which no filter changes."""
    return f"\ue000{i}\ue001"


def contents(fmt: ChatFormat, system: str, article: str, answer: str | None = None) -> list[str]:
    """The user-supplied texts in render order, each a Content that knows its place in the render (of
    `prompt_text`, or with an answer of the finished conversation): they are tokenized as text whatever they contain.

    The place is found by rendering the conversation with a unique sentinel for each text, never by searching the
    render for the text: an article that is, begins or ends with the template's own control string (`<|im_end|>`,
    `<|im_end|>` newline `<|im_start|>user`) would otherwise be found in the template's copy of that string, and its
    own copy would become a control token.
    """
    turns = messages(fmt, system, article, answer)
    texts = [t["content"] for t in turns]
    generation_prompt = answer is None
    real = render(fmt, turns, generation_prompt)
    marks = [_sentinel(i) if t else "" for i, t in enumerate(texts)]   # an empty text has nothing to protect
    marked = render(fmt, [{**turn, "content": m or t} for turn, m, t in zip(turns, marks, texts)], generation_prompt)
    rebuilt, starts, pos, shift = [], [], 0, 0
    for turn, mark, t in zip(turns, marks, texts):
        if not mark:
            starts.append(None)
            continue
        at = marked.find(mark, pos)
        if at < 0 or marked.count(mark) != 1:
            raise TemplateError(f"the {fmt.name} chat template does not render the {turn['role']} message verbatim "
                                "once; the pipeline cannot tell the template's tokens from the text")
        rebuilt += [marked[pos:at], t]
        starts.append(at + shift)
        shift += len(t) - len(mark)
        pos = at + len(mark)
    rebuilt.append(marked[pos:])
    if "".join(rebuilt) != real:
        raise TemplateError(f"the {fmt.name} chat template renders a message (the last: {texts[-1][:30]!r}...) "
                            "otherwise than as its text (it rewrites or tests the content); the pipeline cannot tell "
                            "the template's tokens from the text")
    return [Content(t, None if start is None else len(real) - start) for t, start in zip(texts, starts)]


def pieces(text: str, specials: Sequence[str], texts: Sequence[str]) -> list[tuple[str, bool]]:
    """(piece, is_special): `text` cut at special-token strings that lie outside the spans of `texts`.

    `texts` occur in `text` in this order (as the template rendered them); inside them nothing is special. A
    Content (from `contents`) is taken at its place in the render; a plain string at its first occurrence.
    """
    protected, pos = [], 0
    for t in texts:
        if not t:
            continue
        from_end = getattr(t, "from_end", None)
        if from_end is not None:
            at = len(text) - from_end
            if at < pos or text[at:at + len(t)] != t:
                raise TemplateError(f"{t[:30]!r}... is not where the chat template put it in this render; pass "
                                    "pieces() the render that contents() describes (prompt_text)")
        else:
            at = text.find(t, pos)
        if at < 0:
            raise TemplateError(f"the chat template does not render {t[:30]!r}... verbatim; the pipeline cannot tell "
                                "the template's tokens from the text")
        protected.append((at, at + len(t)))
        pos = at + len(t)
    ordered = sorted(set(s for s in specials if s), key=len, reverse=True)
    out: list[tuple[str, bool]] = []
    buf, i, spans = [], 0, iter(protected + [(len(text) + 1, len(text) + 1)])
    span = next(spans)
    while i < len(text):
        if i == span[0]:
            buf.append(text[span[0]:span[1]])
            i = span[1]
            span = next(spans)
            continue
        match = next((s for s in ordered if text.startswith(s, i) and i + len(s) <= span[0]), None)
        if match:
            if buf:
                out.append(("".join(buf), False))
                buf = []
            out.append((match, True))
            i += len(match)
        else:
            buf.append(text[i])
            i += 1
    if buf:
        out.append(("".join(buf), False))
    return out


def strip_around(parts: list[tuple[str, bool]], lstrip: set[str], rstrip: set[str]) -> list[tuple[str, bool]]:
    """Whitespace a control token swallows, as both tokenizers do (Phi-3's `<|user|>` eats the "\n" after it)."""
    out = [list(p) for p in parts]
    for i, (piece, special) in enumerate(out):
        if not special:
            continue
        if piece in rstrip and i + 1 < len(out) and not out[i + 1][1]:
            out[i + 1][0] = out[i + 1][0].lstrip()
        if piece in lstrip and i > 0 and not out[i - 1][1]:
            out[i - 1][0] = out[i - 1][0].rstrip()
    return [(piece, special) for piece, special in out if piece or special]


# ---------------------------------------------------------------- transformers side


def hf_ids(tokenizer, parts: list[tuple[str, bool]]) -> list[int]:
    added = [t for t in tokenizer.added_tokens_decoder.values() if t.special]
    parts = strip_around(parts, {t.content for t in added if t.lstrip}, {t.content for t in added if t.rstrip})
    ids: list[int] = []
    for piece, special in parts:
        if special:
            ids.append(tokenizer.convert_tokens_to_ids(piece))
        else:
            ids += tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids


def prompt_ids(tokenizer, fmt: ChatFormat, system: str, article: str) -> list[int]:
    text = prompt_text(fmt, system, article)
    return hf_ids(tokenizer, pieces(text, special_tokens(tokenizer), contents(fmt, system, article)))


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_prompt: int              # the first n_prompt ids are the prompt (masked in training)
    end_id: int                # the supervised end-of-turn token, last of input_ids


def finished_turn(fmt: ChatFormat, system: str, article: str, answer: str) -> tuple[str, str, bool]:
    """(generation prompt, what the template writes after the answer, whether the prompt is a prefix of the
    finished conversation's render).

    Training is always generation prompt + answer + the template's end of turn: what the model sees and writes at
    inference. Most templates render the finished turn as exactly that (the prefix property); Gemma 4 drops the
    empty thought channel of its generation prompt from a finished turn, which changes nothing here.
    """
    prompt = prompt_text(fmt, system, article)
    full = render(fmt, messages(fmt, system, article, answer), generation_prompt=False)
    at = full.rfind(answer)
    if at < 0:
        raise TemplateError(f"the {fmt.name} chat template does not render the answer verbatim; the pipeline cannot "
                            "tell where it ends")
    if full.startswith(prompt) and full[len(prompt):at]:
        raise TemplateError(f"the {fmt.name} chat template puts {full[len(prompt):at][:40]!r} between the generation "
                            "prompt and the answer; the model would be trained on text it never sees at inference")
    return prompt, full[at + len(answer):], full.startswith(prompt)


def encode(tokenizer, fmt: ChatFormat, system: str, article: str, answer: str) -> Encoded:
    """Prompt ids + answer ids + the end-of-turn id."""
    prompt, after, _ = finished_turn(fmt, system, article, answer)
    specials = special_tokens(tokenizer)
    ids = hf_ids(tokenizer, pieces(prompt, specials, contents(fmt, system, article)))
    answer_ids = hf_ids(tokenizer, [(answer, False)])
    rest = pieces(after, specials, [])
    if not rest or not rest[0][1]:
        raise TemplateError(f"the {fmt.name} chat template ends the answer with {after[:20]!r}, not with a special "
                            "end-of-turn token; generation could not stop on it")
    end_id = tokenizer.convert_tokens_to_ids(rest[0][0])
    return Encoded(ids + answer_ids + [end_id], len(ids), end_id)


def end_of_turn(tokenizer, fmt: ChatFormat) -> tuple[str, int]:
    """The template's end-of-turn token (text, id)."""
    enc = encode(tokenizer, fmt, PROBE_SYSTEM, PROBE_ARTICLE, PROBE_ANSWER)
    return tokenizer.convert_ids_to_tokens(enc.end_id), enc.end_id


def chat_format(tokenizer) -> ChatFormat:
    """The format of a tokenizer's chat template, or a TemplateError naming the family and the fix."""
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template.strip():
        raise TemplateError("the base model has no chat template (one string); use an instruct model")
    return format_of(template, tokenizer.bos_token, tokenizer.eos_token)


def format_of(template: str, bos: str | None, eos: str | None) -> ChatFormat:
    probe = [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": PROBE_ARTICLE}]
    merged = [{"role": "user", "content": f"{PROBE_SYSTEM}\n\n{PROBE_ARTICLE}"}]
    kwargs = {"enable_thinking": False, "date_string": "26 Jul 2024"}  # harmless where a template ignores them
    family, merge_system = None, False
    try:
        family = detect_family(_render_raw(template, probe, True, bos, eos, kwargs))
    except Exception:
        merge_system = True
    if merge_system:
        try:
            family = detect_family(_render_raw(template, merged, True, bos, eos, kwargs))
        except Exception as e:
            raise TemplateError(f"the chat template cannot render a system prompt and an article ({e}); "
                                "use an instruct model of a supported family: " + SUPPORTED) from e
    if family is None:
        head = _render_raw(template, merged if merge_system else probe, True, bos, eos, kwargs)[:80]
        raise TemplateError(f"unsupported chat template family (it renders {head!r}...): no Ollama Modelfile "
                            f"template reproduces it. Supported: {SUPPORTED}. Fix: choose a base model of one of "
                            "these families, or add the family to jinmei/template/ollama.py FAMILIES with a Go template "
                            "verified by tests/template/test_ollama.py")
    # no system role (Gemma, Mistral, llm-jp): the system text goes before the article, as Gemma-3 and Mistral
    # templates do with a system turn and the family's Go template does with the Modelfile's SYSTEM
    return ChatFormat(template, family, bos, eos, merge_system or not family.system_role)


def check_template(tokenizer, system: str) -> dict[str, Any]:
    """The first stage that sees the base model refuses, in seconds, a template later stages cannot serve."""
    from jinmei.template.ollama import check_system

    fmt = chat_format(tokenizer)
    enc = encode(tokenizer, fmt, system, PROBE_ARTICLE, PROBE_ANSWER)   # the answer's place and the end-of-turn token
    prefix = finished_turn(fmt, system, PROBE_ARTICLE, PROBE_ANSWER)[2]
    days = [render(fmt, messages(fmt, system, PROBE_ARTICLE), True, day=_dt.datetime(y, m, d))
            for y, m, d in ((2024, 7, 26), (2031, 1, 2))]
    if days[0] != days[1]:
        raise TemplateError(f"the {fmt.name} chat template renders a different prompt on another day "
                            "(strftime_now): training and serving would drift apart with the calendar")
    check_system(fmt.family, system)
    if enc.input_ids[:1] and fmt.bos_token and tokenizer.convert_tokens_to_ids(fmt.bos_token) == enc.input_ids[0]:
        if enc.input_ids[1:2] == enc.input_ids[:1]:
            raise TemplateError(f"the {fmt.name} template's render starts with two BOS tokens")
    return {"family": fmt.name, "end_of_turn": tokenizer.convert_ids_to_tokens(enc.end_id),
            "merge_system": fmt.merge_system, "prefix_property": prefix, "probe_tokens": len(enc.input_ids)}


Tokenize = Callable[[str, bool], list[int]]
