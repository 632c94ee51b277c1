"""params.yaml, parsed once into typed sections; each stage sees only the keys dvc.yaml declares for it.

Every knob is a field below with its type and range; its value lives in params.yaml alone (the one source of
values, profiles are deltas over it). The whole file is checked at the start of every stage, so a typo in
`eval.*` stops `dvc repro` before hours of training, and unknown keys are errors: `stage2.lrr` would otherwise be
ignored silently.

This module can only refuse a run or pass params.yaml's values through unchanged (every key must be in the
file), so no stage lists it as a dependency in dvc.yaml: editing a range here never makes a trained model stale
(tests/test_layout.py).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from jinmei.errors import JinmeiError

PARAMS_FILE = "params.yaml"
STAGES = ("demo", "split", "base", "sanity", "stage1", "stage2", "merge", "quantize", "eval")
TRAINING = ("sanity", "stage1", "stage2")


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2 numbers: PyYAML (YAML 1.1) reads `5e-05`, which `dvc exp run -S stage2.lr=5e-5` writes, as a
    string; DVC reads it as a number, and so must every stage."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."))


# ---------------------------------------------------------------- value rules: a complaint, or None when fine

Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int | None = None) -> Rule:
    def rule(v):
        if not _is_int(v) or (minimum is not None and v < minimum):
            return "must be a positive integer" if minimum == 1 else \
                "must be an integer" + (f" >= {minimum}" if minimum is not None else "")
    return rule


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Rule:
    def rule(v):
        bad = not _is_number(v) or (low is not None and (v <= low if low_open else v < low)) or \
            (high is not None and (v >= high if high_open else v > high))
        if bad:
            if low == 0 and low_open and high is None:
                return "must be a positive number"
            if high is None:
                return f"must be a number {'>' if low_open else '>='} {low:g}"
            return f"must be a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return rule


POSITIVE_INT, NONNEGATIVE_INT = integer(1), integer(0)
POSITIVE, NONNEGATIVE, RATIO = number(0, low_open=True), number(0), number(0, 1)
DROPOUT = number(0, 1, high_open=True)


def boolean(v):
    if not isinstance(v, bool):
        return "must be true or false"


def text(v):
    if not isinstance(v, str) or not v.strip():
        return "must be a non-empty string"


def names(v):
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        return "must be a non-empty list of names"
    if len(set(v)) != len(v):
        return "lists a name twice"


def one_of(*choices: str) -> Rule:
    def rule(v):
        if v not in choices:
            return f"must be one of {', '.join(choices)}"
    return rule


def null_or(inner: Rule) -> Rule:
    def rule(v):
        return None if v is None else inner(v)
    return rule


def auto_or(inner: Rule) -> Rule:
    def rule(v):
        complaint = None if v == "auto" else inner(v)
        return complaint and f"must be 'auto' or {complaint.removeprefix('must be ')}"
    return rule


def int_mapping(v):
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_int(x) and x > 0 for k, x in v.items()):
        return "must be a mapping of model sizes (names to positive integers)"


def knob(rule: Rule, doc: str = "") -> Any:
    """A params.yaml key: its rule and what it is for. Its value lives in params.yaml only (no second default)."""
    return field(metadata={"rule": rule, "doc": doc})


# ---------------------------------------------------------------- the sections


@dataclass(frozen=True)
class Corpus:
    path: str = knob(text, "raw corpus, JSON Lines (docs/corpus.md)")


@dataclass(frozen=True)
class Demo:
    n_articles: int = knob(POSITIVE_INT)
    positive_share: float = knob(RATIO)
    min_chars: int = knob(integer(40), "article length the generator aims for")
    max_chars: int = knob(POSITIVE_INT)


@dataclass(frozen=True)
class Schema:
    fields: list = knob(names, "per-person keys; the first is the key")


@dataclass(frozen=True)
class Base:
    model: str = knob(text)
    max_seq_length: int = knob(POSITIVE_INT)
    save_dtype: str = knob(one_of("float32", "bfloat16", "float16"))
    trust_remote_code: bool = knob(boolean)
    tiny: dict = knob(int_mapping)


@dataclass(frozen=True)
class Prompt:
    system: str = knob(text)


@dataclass(frozen=True)
class Split:
    dev_all_size: int = knob(POSITIVE_INT)
    dev_all_positive_share: float = knob(RATIO)
    dev_positive_size: int = knob(POSITIVE_INT)
    sanity_size: int = knob(POSITIVE_INT)
    on_special_tokens: str = knob(one_of("warn", "error", "drop"),
                                  "articles holding a special-token string of the base tokenizer (kept as text)")
    on_name_not_in_text: str = knob(one_of("warn", "error", "drop"),
                                    "persons whose name does not occur in their article: a label no model can extract")
    too_long: str = knob(one_of("refuse", "cut", "drop", "keep"), "a dev article whose prompt plus gold answer "
                         "does not fit eval.n_ctx / eval.max_new_tokens: refuse the corpus (naming the ids), cut the "
                         "article, drop it (counted), or keep it and score it as a failure")


@dataclass(frozen=True)
class Lora:
    r: int = knob(POSITIVE_INT)
    alpha: float = knob(POSITIVE)
    dropout: float = knob(DROPOUT)
    target_modules: list = knob(names)


@dataclass(frozen=True)
class Train:
    backend: str = knob(one_of("auto", "hf", "unsloth"))
    processes: Any = knob(auto_or(POSITIVE_INT))
    global_batch: int = knob(POSITIVE_INT)
    per_device_batch: int = knob(POSITIVE_INT)
    gradient_checkpointing: Any = knob(auto_or(boolean), "auto = recompute only the layers whose "
                                       "activations the longest batch leaves no room for (jinmei.train.memory)")
    too_long: str = knob(one_of("cut_article", "skip"), "an example over base.max_seq_length is dropped "
                         "(counted) or its article cut; the answer never")
    warmup_ratio: float = knob(RATIO)
    lr_scheduler: str = knob(text)
    weight_decay: float = knob(NONNEGATIVE)
    max_grad_norm: float = knob(POSITIVE)
    save_steps: int = knob(POSITIVE_INT)
    group_by_length: bool = knob(boolean)
    loss_type: str = knob(one_of("nll", "chunked_nll", "dft"))


@dataclass(frozen=True)
class Sanity:
    steps: int = knob(POSITIVE_INT)
    global_batch: int | None = knob(null_or(POSITIVE_INT))
    lr: float = knob(POSITIVE)
    min_loss_ratio: float = knob(NONNEGATIVE)
    min_exact_match: float = knob(RATIO)
    max_new_tokens: int = knob(POSITIVE_INT)
    answer_batch_size: int = knob(POSITIVE_INT, "articles per transformers generate call when the overfit "
                                  "model answers its training articles")


@dataclass(frozen=True)
class Stage1:
    size: int | None = knob(null_or(POSITIVE_INT))
    positive_ratio: float = knob(RATIO)
    epochs: float = knob(POSITIVE)
    lr: float = knob(POSITIVE)
    lora_dropout: float | None = knob(null_or(DROPOUT))


@dataclass(frozen=True)
class Stage2:
    size: int | None = knob(null_or(POSITIVE_INT))
    positive_ratio: float = knob(RATIO)
    epochs: float = knob(POSITIVE)
    lr: float = knob(POSITIVE)
    lora_dropout: float | None = knob(null_or(DROPOUT))


@dataclass(frozen=True)
class Merge:
    dtype: str = knob(one_of("auto", "float32", "bfloat16", "float16"))


def gguf_name(v):
    if text(v) or not re.fullmatch(r"[A-Za-z0-9._-]+", v):
        return "must be letters, digits, '.', '_' or '-' (it names the GGUF file)"


@dataclass(frozen=True)
class Quantize:
    type: str = knob(text, "a llama.cpp type; checked against llama.cpp's list before training")
    name: str = knob(gguf_name)
    keep_f16: bool = knob(boolean)


@dataclass(frozen=True)
class Eval:
    max_new_tokens: int = knob(POSITIVE_INT)
    grammar: bool = knob(boolean)
    n_ctx: int = knob(POSITIVE_INT)
    n_threads: int = knob(POSITIVE_INT)
    workers: Any = knob(auto_or(POSITIVE_INT), "eval processes; auto = one per visible GPU, each pinned "
                        "to it (1 on CPU)")
    compare_subset: int = knob(NONNEGATIVE_INT)
    compare_batch_size: int = knob(POSITIVE_INT, "compare: articles per transformers generate call (padded to "
                                   "the longest answer in it)")
    recall_drop_margin: float = knob(RATIO)
    quant_drop_margin: float = knob(RATIO)
    max_false_positive_rate: float = knob(RATIO)
    min_parse_rate: float = knob(RATIO)
    min_recall: float = knob(RATIO, "advice: a Dev-Positive recall below this is flagged, whatever stage1 did")
    min_person_f1: float = knob(RATIO, "advice: a Dev-Positive person F1 below this is flagged")
    max_answered_empty_rate: float = knob(RATIO, "advice: this share of empty answers on Dev-Positive "
                                          "(all positive) = a model that answers empty to everything")
    batch_size: int = knob(POSITIVE_INT)
    n_batch: int = knob(POSITIVE_INT)


SECTIONS: dict[str, type] = {
    "corpus": Corpus, "demo": Demo, "schema": Schema, "base": Base, "prompt": Prompt, "split": Split,
    "lora": Lora, "train": Train, "sanity": Sanity, "stage1": Stage1, "stage2": Stage2, "merge": Merge,
    "quantize": Quantize, "eval": Eval,
}
TOP_LEVEL = ("seed", *SECTIONS)


@dataclass(frozen=True)
class Params:
    seed: int
    corpus: Corpus
    demo: Demo
    schema: Schema
    base: Base
    prompt: Prompt
    split: Split
    lora: Lora
    train: Train
    sanity: Sanity
    stage1: Stage1
    stage2: Stage2
    merge: Merge
    quantize: Quantize
    eval: Eval


# ---------------------------------------------------------------- parsing


def _fail(key: str, value: Any, complaint: str) -> JinmeiError:
    return JinmeiError(f"params.yaml {key}={value!r}: {complaint}")


def _unknown(key: str, known: list[str]) -> JinmeiError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}'? " if close else ""
    return JinmeiError(f"params.yaml {key}: unknown key; {hint}known here: {', '.join(known)} "
                       "(a key the recipe does not read would be ignored silently; a new knob is a field in "
                       "jinmei/config/params.py)")


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise _fail(name, raw, "must be a section (a mapping of keys)")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            raise _unknown(f"{name}.{key}", known)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            raise JinmeiError(f"params.yaml {name}.{f.name}: missing; add it to the '{name}' section "
                              "(the committed params.yaml has every key, with a comment on what it does)")
        value = raw[f.name]
        complaint = f.metadata["rule"](value)
        if complaint:
            raise _fail(f"{name}.{f.name}", value, complaint)
        values[f.name] = value
    return cls(**values)


def _cross_checks(p: Params) -> None:
    """Checks that need two keys at once: all of them here."""
    if p.demo.min_chars > p.demo.max_chars:
        raise _fail("demo.min_chars", p.demo.min_chars, f"is above demo.max_chars={p.demo.max_chars}")
    if p.eval.max_new_tokens >= p.eval.n_ctx:
        raise _fail("eval.max_new_tokens", p.eval.max_new_tokens,
                    f"leaves no room for the prompt in eval.n_ctx={p.eval.n_ctx}; raise eval.n_ctx")


def parse(raw: Any) -> Params:
    """The whole file, checked: the first wrong key raises a JinmeiError that names it and the fix."""
    if not isinstance(raw, dict):
        raise JinmeiError("params.yaml: must be a mapping of sections (seed, corpus, demo, ...)")
    for name in raw:
        if name not in TOP_LEVEL:
            raise _unknown(str(name), list(TOP_LEVEL))
    if "seed" not in raw:
        raise JinmeiError("params.yaml seed: missing; add `seed: <integer>`")
    if integer()(raw["seed"]):
        raise _fail("seed", raw["seed"], "must be an integer")
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in raw:
            raise JinmeiError(f"params.yaml: section '{name}' is missing (see the committed params.yaml for its keys)")
        sections[name] = _section(name, cls, raw[name])
    params = Params(seed=raw["seed"], **sections)
    _cross_checks(params)
    return params


def read_yaml(path: Path | str) -> Any:
    path = Path(path)
    if not path.exists():
        raise JinmeiError(f"{path}: not found; run from the repository root")
    with open(path, encoding="utf-8") as f:
        try:
            return yaml.load(f, Loader=ParamsLoader) or {}
        except yaml.YAMLError as e:
            raise JinmeiError(f"{path}: not valid YAML ({e})") from e


def params_path() -> Path:
    return Path(os.environ.get("JINMEI_PARAMS", PARAMS_FILE))


def load_all(path: Path | str | None = None) -> Params:
    """Every section (tools and pre-flight checks; a stage uses `load`)."""
    return parse(read_yaml(path or params_path()))


def as_dict(section: Any) -> dict[str, Any]:
    return dataclasses.asdict(section)


# ---------------------------------------------------------------- what a stage may read (from dvc.yaml)


class UndeclaredParamError(RuntimeError):
    """A stage read a key dvc.yaml does not list for it: DVC would not rerun the stage when it changes."""


def declared(stage: str, dvc_yaml: Path | str = "dvc.yaml") -> list[str]:
    """The `params:` list of a stage in dvc.yaml (e.g. ["seed", "schema.fields", "split"])."""
    stages = read_yaml(dvc_yaml).get("stages", {})
    if stage not in stages:
        raise JinmeiError(f"{dvc_yaml}: no stage '{stage}'")
    return [str(p) for p in stages[stage].get("params", [])]


class _SectionView:
    def __init__(self, stage: str, name: str, section: Any, keys: set[str] | None):
        self._stage, self._name, self._section, self._keys = stage, name, section, keys

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if self._keys is not None and key not in self._keys:
            raise UndeclaredParamError(
                f"stage '{self._stage}' reads params {self._name}.{key}, which dvc.yaml does not list in its "
                f"params: add `{self._name}.{key}` there, or DVC will not rerun the stage when it changes")
        return getattr(self._section, key)

    def __repr__(self) -> str:
        return f"<{self._stage} view of {self._name}: {sorted(self._keys) if self._keys else 'all'}>"


class StageParams:
    """The params one stage declares in dvc.yaml, and nothing else."""

    def __init__(self, stage: str, params: Params, keys: list[str]):
        self._stage, self._params = stage, params
        self._keys: dict[str, set[str] | None] = {}
        for key in keys:
            name, _, sub = key.partition(".")
            if sub and self._keys.get(name, set()) is not None:
                self._keys.setdefault(name, set()).add(sub)
            else:
                self._keys[name] = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._keys:
            raise UndeclaredParamError(
                f"stage '{self._stage}' reads params '{name}', which dvc.yaml does not list in its params: "
                "add it there, or DVC will not rerun the stage when it changes")
        value = getattr(self._params, name)
        return value if name == "seed" else _SectionView(self._stage, name, value, self._keys[name])


def load(stage: str, path: Path | str | None = None) -> StageParams:
    """Check the whole params file, then hand the stage the keys its dvc.yaml entry declares."""
    path = Path(path or params_path())
    params = load_all(path)
    beside = path.parent / "dvc.yaml"   # the pipeline's own; a params file elsewhere (tests) uses this checkout's
    dvc_yaml = beside if beside.exists() else Path(__file__).resolve().parents[2] / "dvc.yaml"
    return StageParams(stage, params, declared(stage, dvc_yaml))
