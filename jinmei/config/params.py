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

from jinmei.errors import JinmeiError

PARAMS_FILE = "params.yaml"
STAGES = ("demo", "split", "base", "sanity", "stage1", "stage2", "merge", "quantize", "eval")
TRAINING = ("sanity", "stage1", "stage2")


# ---------------------------------------------------------------- reading: exactly as DVC reads the file
#
# DVC 3 reads params.yaml (and dvc.yaml) as UTF-8 with ruamel.yaml's safe loader: YAML 1.2, where `5e-05` (what
# `dvc exp run -S stage2.lr=5e-5` writes) is a number and `yes`, `34:08` are strings. jinmei reads it with the same
# library and settings (dvc.utils.serialize._yaml.parse_yaml; tests/config/test_yaml.py holds the two together), so a
# stage run by DVC, by torchrun's relaunch or by hand on a bare GPU host sees the same values. What YAML 1.1 readers
# (PyYAML, older tools, a reader's eye) would take differently is refused with the line and what to write instead.

YAML_1_1_BOOL = re.compile(r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$")  # PyYAML's (not y/n)
YAML_1_1_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
LEADING_ZERO_INT = re.compile(r"^[-+]?0[0-9_]+$")


def _sexagesimal(text: str) -> float | int:
    sign = -1 if text.startswith("-") else 1
    value: float = 0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        value = value * 60 + (float(part) if "." in part else int(part))
    return sign * value


def _ambiguity(value: str, tag: str) -> str | None:
    """What YAML 1.1 makes of a plain scalar that YAML 1.2 (DVC) reads otherwise, and what to write; else None."""
    if tag.endswith(":str") and YAML_1_1_BOOL.match(value):
        return (f"DVC (YAML 1.2) reads {value} as the string '{value}', YAML 1.1 readers as a boolean; "
                f"write true or false (or '{value}' in quotes for the text)")
    if tag.endswith(":str") and YAML_1_1_SEXAGESIMAL.match(value):
        return (f"DVC (YAML 1.2) reads {value} as the string '{value}', YAML 1.1 readers as the base-60 number "
                f"{_sexagesimal(value)}; write {_sexagesimal(value)} (or '{value}' in quotes for the text)")
    if tag.endswith(":int") and LEADING_ZERO_INT.match(value):
        digits = value.replace("_", "")
        is_octal = re.fullmatch(r"[-+]?0[0-7]+", digits) is not None
        octal = f"the octal number {int(digits, 8)}" if is_octal else "a string"
        sign = "-" if digits.startswith("-") else ""
        or_octal = f" (or {sign}0o{digits.lstrip('+-')[1:]} for octal)" if is_octal else ""
        return (f"DVC (YAML 1.2) reads {value} as {int(digits)}, YAML 1.1 readers as {octal}; write {int(digits)} "
                f"without the leading zero{or_octal}")
    return None


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")  # what DVC does (dvc.utils.serialize._common._load_data): strict UTF-8
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        try:
            data.decode("cp932")
            hint = f"convert it: `iconv -f SHIFT_JIS -t UTF-8 {path} > fixed.yaml` and replace it"
        except UnicodeDecodeError:
            hint = "save it as UTF-8"
        raise JinmeiError(f"{path} line {line}: byte 0x{data[e.start]:02x} at column {column} is not UTF-8; "
                          f"DVC reads this file as UTF-8 only: {hint}") from None


def _yaml_problem(path: Path, text: str, e: Exception) -> JinmeiError:
    """A ruamel.yaml error as one line: file, line, what is wrong."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"line {mark.line + 1}"
    elif getattr(e, "position", None) is not None:
        where = f"line {_line_of(text, e.position)}"
    else:
        where = "somewhere"
    what = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
    if getattr(e, "character", None) is not None and getattr(e, "reason", None):
        what = f"character U+{e.character:04X}: {what}"
    context = getattr(e, "context", None)
    what = " ".join(f"{context + ', ' if context else ''}{what}".split())
    return JinmeiError(f"{path} {where}: not valid YAML ({what}); DVC cannot read it either")


def _check_nodes(path: Path, root: Any) -> None:
    """Duplicate keys (DVC refuses them; "last one wins" elsewhere) and plain scalars YAML 1.1 reads otherwise:
    the first in the file, as one line."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    problems: list[tuple[int, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:  # an alias: checked where its anchor is
            continue
        seen.add(id(node))
        line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            problem = node.style is None and _ambiguity(str(node.value), node.tag or "")
            if problem:
                problems.append((line, f"{key or 'the document'}: {problem}"))
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                name = str(k.value) if isinstance(k, ScalarNode) else f"<{type(k).__name__}>"
                where = f"{key}.{name}" if key else name
                if isinstance(k, ScalarNode) and name != "<<":
                    ident, at = (k.tag, k.value), k.start_mark.line + 1
                    if ident in first:
                        problems.append((at, f"{where} appears a second time (first at line {first[ident]}); DVC "
                                             "refuses the file, other readers silently keep the last one: keep one "
                                             f"{'section' if isinstance(v, MappingNode) else 'value'} (merge the two)"))
                    else:
                        first[ident] = at
                stack.append((k, where))
                stack.append((v, where))
        elif isinstance(node, SequenceNode):
            stack.extend((item, f"{key}[{i}]") for i, item in enumerate(node.value))
    if problems:
        line, message = min(problems, key=lambda lp: lp[0])
        raise JinmeiError(f"{path} line {line}: {message}")


def loads_yaml(text: str, path: Path | str = PARAMS_FILE) -> Any:
    """YAML text read as DVC reads it, or one JinmeiError naming the file, the line and what to write instead."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        root = YAML(typ="safe").compose(text)
        if root is not None:
            _check_nodes(path, root)
        data = YAML(typ="safe").load(text)  # dvc.utils.serialize._yaml.parse_yaml: YAML(typ="safe").load(text)
    except YAMLError as e:
        raise _yaml_problem(path, text, e) from None
    return data or {}


def read_yaml(path: Path | str) -> Any:
    """A YAML file (params.yaml, dvc.yaml, a profile) read as DVC reads it: UTF-8, ruamel.yaml, YAML 1.2."""
    path = Path(path)
    if not path.exists():
        raise JinmeiError(f"{path}: not found; run from the repository root")
    if path.is_dir():
        raise JinmeiError(f"{path}: is a folder, not a YAML file")
    return loads_yaml(_decode(path, path.read_bytes()), path)


class ParamsLoader:
    """For callers of PyYAML's API: `yaml.load(text, Loader=ParamsLoader)` reads as `read_yaml` does (DVC's
    ruamel.yaml, YAML 1.2), not as PyYAML's YAML 1.1 would: one reading of params.yaml everywhere."""

    def __init__(self, stream: Any):
        raw = stream if isinstance(stream, (str, bytes)) else stream.read()
        name = Path(getattr(stream, "name", "<string>"))
        self._path = name
        self._text = _decode(name, raw) if isinstance(raw, bytes) else raw

    def get_single_data(self) -> Any:
        return loads_yaml(self._text, self._path)

    def dispose(self) -> None:
        pass


# ---------------------------------------------------------------- value rules: a complaint, or None when fine

Rule = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


INT32_MAX = 2**31 - 1   # every count a stage hands to llama.cpp, torch or the OS fits a 32-bit int
SEED_MAX = 2**32 - 1    # numpy.random.seed and transformers.set_seed refuse anything outside 0 .. 2**32 - 1
N_CTX_MAX = 2**24       # 16M tokens: more than any model is trained on; llama.cpp's n_ctx is 32-bit
N_THREADS_MAX = 512     # ggml's GGML_MAX_N_THREADS
LLAMA_MAX_SEQ = 256     # llama.cpp's llama_max_parallel_sequences(): sequences in one context
GGUF_NAME_MAX = 200     # <name>-<TYPE>.gguf within the 255 bytes a file name may take


def integer(minimum: int | None = None, maximum: int | None = INT32_MAX, why: str = "") -> Rule:
    """An integer (never a bool) in [minimum, maximum]; `why` says which library draws the line."""
    because = f" ({why})" if why else ""

    def rule(v):
        if not _is_int(v) or (minimum is not None and v < minimum):
            return ("must be a positive integer" if minimum == 1 else
                    "must be an integer" + (f" >= {minimum}" if minimum is not None else "")) + because
        if maximum is not None and v > maximum:
            return f"must be at most {maximum}" + (because or " (the largest 32-bit integer; no stage needs more)")
    return rule


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, why: str = "") -> Rule:
    because = f" ({why})" if why else ""

    def rule(v):
        bad = not _is_number(v) or (low is not None and (v <= low if low_open else v < low)) or \
            (high is not None and (v >= high if high_open else v > high))
        if bad:
            if low == 0 and low_open and high is None:
                return "must be a positive number" + because
            if high is None:
                return f"must be a number {'>' if low_open else '>='} {low:g}" + because
            return (f"must be a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                    + because)
    return rule


POSITIVE_INT, NONNEGATIVE_INT = integer(1), integer(0)
POSITIVE, NONNEGATIVE, RATIO = number(0, low_open=True), number(0), number(0, 1)
DROPOUT = number(0, 1, high_open=True)
SEED = integer(0, SEED_MAX, "numpy.random.seed and transformers.set_seed take 0 .. 2**32 - 1 only")
WARMUP = number(0, 1, high_open=True, why="transformers reads a warmup of 1 or more as a count of steps: "
                "1.0 would warm up for one optimizer step")


def whole_number(v):
    """lora.alpha: the trainer hands int(alpha) to peft and Unsloth, so a fraction would be cut off silently."""
    if not _is_number(v) or v < 1 or float(v) != int(v) or v > INT32_MAX:
        return ("must be a positive whole number (the trainer hands int(lora.alpha) to peft and Unsloth: "
                "0.5 would become 0, an adapter that changes nothing; 16.5 would become 16)")


# transformers' SchedulerType names the training stages can run: the others need what jinmei never passes
# (tests/config/test_library_limits.py checks both lists against the installed transformers).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
UNRUNNABLE_SCHEDULERS = {
    "reduce_lr_on_plateau": "transformers needs an evaluation set for it and the stages train without one",
    "greedy": "transformers needs an evaluation set for it and the stages train without one",
    "cosine_with_min_lr": "transformers needs min_lr or min_lr_rate in lr_scheduler_kwargs, which the stages do "
                          "not pass",
    "cosine_warmup_with_min_lr": "transformers needs min_lr or min_lr_rate in lr_scheduler_kwargs, which the stages "
                                 "do not pass",
    "warmup_stable_decay": "transformers needs num_decay_steps, which the stages do not pass",
}


def scheduler(v):
    if v in SCHEDULERS:
        return None
    reason = UNRUNNABLE_SCHEDULERS.get(v) if isinstance(v, str) else None
    return f"{reason if reason else 'unknown scheduler'}; valid: {', '.join(SCHEDULERS)}"


UNSAFE_IN_COMMAND = re.compile(r'["$`\\\x00-\x1f\x7f]')


def command_path(v):
    """corpus.path: dvc.yaml writes it into split's shell command as "${corpus.path}"."""
    if text(v):
        return text(v)
    if v != v.strip():
        return "starts or ends with a space; remove it (the file name would include it)"
    bad = UNSAFE_IN_COMMAND.search(v)
    if bad:
        return (f"holds {bad.group()!r}, which breaks dvc.yaml's quoted \"${{corpus.path}}\" in split's shell "
                "command; rename the file or folder")


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


TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "trackio")  # transformers' report_to integrations


def trackers(v):
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        return f"must be a list of trackers ([] for none): {', '.join(TRACKERS)}"
    unknown = [x for x in v if x not in TRACKERS]
    if unknown:
        return f"names {', '.join(map(repr, unknown))}, not one of {', '.join(TRACKERS)}"
    if len(set(v)) != len(v):
        return "lists a tracker twice"


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


TINY_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def tiny_sizes(v):
    """base.tiny: sizes of the tiny-random llama (jinmei.model.basemodel.DEFAULT_TINY; base refuses other keys)."""
    if not isinstance(v, dict) or not all(isinstance(k, str) and _is_int(x) and x > 0 for k, x in v.items()):
        return "must be a mapping of model sizes (names to positive integers)"
    unknown = sorted(set(v) - set(TINY_SIZES))
    if unknown:
        return f"has unknown sizes {unknown}; known: {', '.join(TINY_SIZES)}"
    if any(x > 1 << 20 for x in v.values()):
        return "sizes above 1048576 are no tiny model"


def knob(rule: Rule, doc: str = "") -> Any:
    """A params.yaml key: its rule and what it is for. Its value lives in params.yaml only (no second default)."""
    return field(metadata={"rule": rule, "doc": doc})


# ---------------------------------------------------------------- the sections


@dataclass(frozen=True)
class Corpus:
    path: str = knob(command_path, "raw corpus, JSON Lines (docs/corpus.md)")


@dataclass(frozen=True)
class Demo:
    n_articles: int = knob(POSITIVE_INT)
    positive_share: float = knob(RATIO)
    min_chars: int = knob(integer(40), "article length the generator aims for")
    max_chars: int = knob(POSITIVE_INT)
    decoy_share: float = knob(RATIO, "articles that also hold a fake JSON answer (gold unchanged): the model "
                              "learns to read the story, not JSON-looking text")


@dataclass(frozen=True)
class Schema:
    fields: list = knob(names, "per-person keys; the first is the key")


@dataclass(frozen=True)
class Base:
    model: str = knob(text)
    max_seq_length: int = knob(POSITIVE_INT)
    save_dtype: str = knob(one_of("float32", "bfloat16", "float16"))
    revision: str | None = knob(null_or(text), "a hub id's commit: dvc.lock sees a changed model only through it")
    trust_remote_code: bool = knob(boolean)
    tiny: dict = knob(tiny_sizes)


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
    alpha: float = knob(whole_number)
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
    warmup_ratio: float = knob(WARMUP)
    lr_scheduler: str = knob(scheduler)
    weight_decay: float = knob(NONNEGATIVE)
    max_grad_norm: float = knob(POSITIVE)
    save_steps: int = knob(POSITIVE_INT)
    group_by_length: bool = knob(boolean)
    loss_type: str = knob(one_of("nll", "chunked_nll", "dft"))
    optim: str = knob(one_of("adamw_torch_fused", "adamw_torch", "adamw_8bit"),
                      "the optimizer on both backends (Unsloth's own default would be adamw_8bit)")
    logging_steps: Any = knob(auto_or(POSITIVE_INT), "optimizer steps per point of the loss curve, each point "
                              "the mean of its steps; auto = about 100 points per run")
    report_to: list = knob(trackers, "trackers that also get every logged step through transformers' integrations "
                           "(the dvclive curves and the terminal bar are always written)")


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
class Mixture:
    """stage1 and stage2 have the same knobs: a mixture drawn from the training pools, trained for some epochs."""
    size: int | None = knob(null_or(POSITIVE_INT))
    positive_ratio: float = knob(RATIO)
    epochs: float = knob(POSITIVE)
    lr: float = knob(POSITIVE)
    lora_dropout: float | None = knob(null_or(DROPOUT))


Stage1 = Stage2 = Mixture


@dataclass(frozen=True)
class Merge:
    dtype: str = knob(one_of("auto", "float32", "bfloat16", "float16"))


def gguf_name(v):
    if text(v) or not re.fullmatch(r"[A-Za-z0-9._-]+", v):
        return "must be letters, digits, '.', '_' or '-' (it names the GGUF file)"
    if len(v) > GGUF_NAME_MAX:
        return f"is {len(v)} characters; at most {GGUF_NAME_MAX} (<name>-<TYPE>.gguf must fit a 255-byte file name)"


@dataclass(frozen=True)
class Quantize:
    type: str = knob(text, "a llama.cpp type; checked against llama.cpp's list before training")
    name: str = knob(gguf_name)
    keep_f16: bool = knob(boolean)


@dataclass(frozen=True)
class Eval:
    max_new_tokens: int = knob(POSITIVE_INT)
    grammar: bool = knob(boolean)
    n_ctx: int = knob(integer(1, N_CTX_MAX, "more tokens than any model is trained on; llama.cpp reads n_ctx as "
                                    "32 bits, so 4294969344 would silently become 2048"),
                      "llama.cpp context per article: prompt + max_new_tokens; at most the base model's trained "
                      "context")
    n_threads: int = knob(integer(1, N_THREADS_MAX, "ggml's GGML_MAX_N_THREADS; 16384 threads hang llama.cpp, "
                                                    "100000 crash it"))
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
    batch_size: int = knob(integer(1, LLAMA_MAX_SEQ - 1, f"llama.cpp decodes at most {LLAMA_MAX_SEQ} sequences "
                                                         "in one context and the engine keeps one for the shared "
                                                         "prompt"))
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
    if p.eval.batch_size > 1 and not p.eval.grammar:  # jinmei.infer.engine: one context of batch_size + 1 sequences
        context = p.eval.n_ctx * (p.eval.batch_size + 1)
        if context > 2**32 - 1:
            raise _fail("eval.batch_size", p.eval.batch_size,
                        f"x (eval.n_ctx={p.eval.n_ctx}) needs a context of {context} tokens, beyond llama.cpp's 32-bit "
                        "n_ctx; lower eval.batch_size or eval.n_ctx")
        if p.eval.n_batch > context:
            raise _fail("eval.n_batch", p.eval.n_batch,
                        f"is above the largest context the batched decode opens (eval.n_ctx x (eval.batch_size + 1) "
                        f"= {context} tokens), to which llama.cpp cuts it; set eval.n_batch <= {context}")


def parse(raw: Any) -> Params:
    """The whole file, checked: the first wrong key raises a JinmeiError that names it and the fix."""
    if not isinstance(raw, dict):
        raise JinmeiError("params.yaml: must be a mapping of sections (seed, corpus, demo, ...)")
    for name in raw:
        if name not in TOP_LEVEL:
            raise _unknown(str(name), list(TOP_LEVEL))
    if "seed" not in raw:
        raise JinmeiError("params.yaml seed: missing; add `seed: <integer>`")
    complaint = SEED(raw["seed"])
    if complaint:
        raise _fail("seed", raw["seed"], complaint)
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in raw:
            raise JinmeiError(f"params.yaml: section '{name}' is missing (see the committed params.yaml for its keys)")
        sections[name] = _section(name, cls, raw[name])
    params = Params(seed=raw["seed"], **sections)
    _cross_checks(params)
    return params


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
