"""Check params.yaml before any heavy work: one error that names the key and says what to write instead.

Each stage calls `validate(params, "<stage>")` first. It checks every key that stage and the stages after
it read, so a typo in `eval.*` stops `dvc repro` before hours of training, while `dvc repro split` never
trips over a key only a later stage reads. Unknown keys are errors too: `stage2.lrr` would otherwise be
ignored silently and the run would train with the old `stage2.lr`.
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

from stages.common import JinmeiError

STAGES = ("demo", "split", "base", "sanity", "stage1", "stage2", "merge", "quantize", "eval")
# The params sections each stage reads (dvc.yaml `params:`), so validate() checks what matters from here on.
READS = {
    "demo": ("seed", "demo", "schema"),
    "split": ("seed", "corpus", "schema", "split"),
    "base": ("seed", "base"),
    "sanity": ("seed", "prompt", "schema", "base", "lora", "train", "sanity"),
    "stage1": ("seed", "prompt", "schema", "base", "lora", "train", "stage1"),
    "stage2": ("seed", "prompt", "schema", "base", "lora", "train", "stage2"),
    "merge": ("merge",),
    "quantize": ("prompt", "quantize"),
    "eval": ("seed", "schema", "prompt", "quantize", "stage2", "eval"),
}
TRAINING = ("sanity", "stage1", "stage2")
# A short article and a one-person answer: what every training example needs room for at the least.
MINIMAL_ARTICLE = "東京都港区の会社員、山田太郎さん(45)が逮捕された。"
MINIMAL_OUTPUT = {"persons": [{"name": "山田太郎", "act": "逮捕", "address": "東京都港区", "signature": "会社員"}]}


# ---------------------------------------------------------------- value rules (each returns a complaint or None)

Rule = Callable[[Any], "str | None"]


def _number(value: Any) -> float | None:
    """A YAML number, or a string like '5e-05' (PyYAML reads exponents without a dot as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "must be a positive integer"


def nonnegative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer >= 0"


def any_int(value):
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"


def positive_number(value):
    x = _number(value)
    if x is None or not math.isfinite(x) or x <= 0:
        return "must be a positive number"


def nonnegative_number(value):
    x = _number(value)
    if x is None or not math.isfinite(x) or x < 0:
        return "must be a number >= 0"


def ratio(value):
    x = _number(value)
    if x is None or not 0.0 <= x <= 1.0:
        return "must be a number in [0, 1]"


def dropout(value):
    x = _number(value)
    if x is None or not 0.0 <= x < 1.0:
        return "must be a number in [0, 1)"


def boolean(value):
    if not isinstance(value, bool):
        return "must be true or false"


def text(value):
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty string"


def names(value):
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        return "must be a non-empty list of names"
    if len(set(value)) != len(value):
        return "lists a name twice"


def mapping(value):
    if not isinstance(value, dict):
        return "must be a mapping"


def one_of(*choices: str) -> Rule:
    def rule(value):
        if value not in choices:
            return f"must be one of {', '.join(choices)}"
    return rule


def null_or(rule: Rule) -> Rule:
    def check(value):
        return None if value is None else rule(value)
    return check


def auto_or(rule: Rule) -> Rule:
    def check(value):
        if value == "auto":
            return None
        complaint = rule(value)
        return complaint and f"must be 'auto' or {complaint.removeprefix('must be ')}"
    return check


class Defaulted:
    """A key the code reads with a default: it may be absent, but when present it must be right."""

    def __init__(self, rule: Rule):
        self.rule = rule


SCHEMA: dict[str, Any] = {
    "seed": any_int,
    "corpus": {"path": text},
    "demo": {"n_articles": positive_int, "positive_share": ratio, "min_chars": positive_int,
             "max_chars": positive_int},
    "schema": {"fields": names},
    "base": {"model": text, "max_seq_length": positive_int, "save_dtype": one_of("float32", "bfloat16", "float16"),
             "trust_remote_code": boolean, "tiny": mapping},
    "prompt": {"system": text},
    "split": {"dev_all_size": positive_int, "dev_all_positive_share": ratio, "dev_positive_size": positive_int,
              "sanity_size": positive_int},
    "lora": {"r": positive_int, "alpha": positive_number, "dropout": dropout, "target_modules": names},
    "train": {"backend": one_of("auto", "hf", "unsloth"), "processes": Defaulted(auto_or(positive_int)),
              "global_batch": positive_int, "per_device_batch": positive_int, "gradient_checkpointing": boolean,
              "too_long": one_of("cut_article", "skip"), "warmup_ratio": ratio, "lr_scheduler": text,
              "weight_decay": nonnegative_number, "max_grad_norm": positive_number, "save_steps": positive_int,
              "group_by_length": boolean, "loss_type": Defaulted(one_of("nll", "chunked_nll", "dft"))},
    "sanity": {"steps": positive_int, "global_batch": Defaulted(null_or(positive_int)), "lr": positive_number, "min_loss_ratio": nonnegative_number,
               "min_exact_match": ratio, "max_new_tokens": positive_int},
    "stage1": {"size": null_or(positive_int), "positive_ratio": ratio, "epochs": positive_number,
               "lr": positive_number, "lora_dropout": null_or(dropout)},
    "stage2": {"size": null_or(positive_int), "positive_ratio": ratio, "epochs": positive_number,
               "lr": positive_number, "lora_dropout": Defaulted(null_or(dropout))},
    "merge": {"dtype": one_of("auto", "float32", "bfloat16", "float16")},
    "quantize": {"type": text, "name": text, "keep_f16": boolean},
    "eval": {"max_new_tokens": positive_int, "grammar": boolean, "n_ctx": positive_int, "n_threads": positive_int,
             "workers": positive_int, "compare_subset": nonnegative_int, "recall_drop_margin": ratio,
             "quant_drop_margin": ratio, "max_false_positive_rate": ratio, "min_parse_rate": ratio,
             "batch_size": positive_int, "n_batch": positive_int},
}


# ---------------------------------------------------------------- checks


def _fail(key: str, value: Any, complaint: str) -> JinmeiError:
    return JinmeiError(f"params.yaml {key}={value!r}: {complaint}")


def _unknown(key: str, known: list[str]) -> JinmeiError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}'? " if close else ""
    return JinmeiError(f"params.yaml {key}: unknown key; {hint}known here: {', '.join(known)} "
                       "(a key the recipe does not read would be ignored silently; if you added it to a stage, "
                       "add it to stages/validate.py SCHEMA)")


def check_keys(params: dict[str, Any]) -> None:
    """Typos anywhere in the file, e.g. `stage2.lrr` or a misspelt section."""
    if not isinstance(params, dict):
        raise JinmeiError("params.yaml: must be a mapping of sections (seed, corpus, demo, ...)")
    for name, value in params.items():
        if name not in SCHEMA:
            raise _unknown(str(name), list(SCHEMA))
        spec = SCHEMA[name]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise _fail(name, value, "must be a section (a mapping of keys)")
            for key in value:
                if key not in spec:
                    raise _unknown(f"{name}.{key}", list(spec))


def check_section(params: dict[str, Any], name: str) -> None:
    if name not in params:
        raise JinmeiError(f"params.yaml: section '{name}' is missing (see the committed params.yaml for its keys)")
    spec, value = SCHEMA[name], params[name]
    if not isinstance(spec, dict):
        complaint = spec(value)
        if complaint:
            raise _fail(name, value, complaint)
        return
    for key, rule in spec.items():
        if key not in value:
            if isinstance(rule, Defaulted):
                continue
            raise JinmeiError(f"params.yaml {name}.{key}: missing; add it to the '{name}' section")
        complaint = (rule.rule if isinstance(rule, Defaulted) else rule)(value[key])
        if complaint:
            raise _fail(f"{name}.{key}", value[key], complaint)


def quant_type_names() -> list[str] | None:
    """Types llama.cpp can quantize to (its LLAMA_FTYPE_MOSTLY_* names); None when llama-cpp-python is absent."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    import llama_cpp

    found = {n.removeprefix("LLAMA_FTYPE_MOSTLY_") for n in dir(llama_cpp) if n.startswith("LLAMA_FTYPE_MOSTLY_")}
    return sorted(found | {"F32"})


def check_quantize_type(params: dict[str, Any], required: bool) -> None:
    value = params["quantize"]["type"]
    valid = quant_type_names()
    if valid is None:
        if required:
            raise JinmeiError("quantize: llama-cpp-python is not installed (`pip install llama-cpp-python`)")
        return
    if str(value).strip().upper() not in valid:
        raise _fail("quantize.type", value, f"unknown llama.cpp type; valid: {', '.join(valid)}")


def check_quantize_name(params: dict[str, Any]) -> None:
    value = params["quantize"]["name"]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", str(value)):
        raise _fail("quantize.name", value, "must be letters, digits, '.', '_' or '-' (it names the GGUF file)")


def check_base_model(params: dict[str, Any]) -> None:
    """The base model must be reachable without the network (unless JINMEI_ALLOW_HUB=1)."""
    spec = str(params["base"]["model"]).strip()
    if spec == "tiny-random":
        return
    if spec.startswith("bundled:"):
        from stages.base import bundled_gguf_path

        bundled_gguf_path(spec)  # raises a JinmeiError naming the package to install
        return
    path = Path(spec).expanduser()
    if path.is_dir() or spec.startswith(("/", ".", "~")) or os.sep in spec and path.exists():
        if not path.is_dir():
            raise _fail("base.model", spec, f"folder {path} not found")
        if not (path / "config.json").is_file():
            raise _fail("base.model", spec, f"{path} has no config.json; point it at a Hugging Face model folder")
        return
    if os.environ.get("JINMEI_ALLOW_HUB") == "1":
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    if not isinstance(cached, str):
        raise _fail("base.model", spec,
                    "neither a local folder nor in the Hugging Face cache, and stages run offline. Fix: run "
                    f"`hf download {spec}` (or the base stage once with JINMEI_ALLOW_HUB=1), or set base.model "
                    "to a local folder, bundled:smollm2-135m-instruct or tiny-random")


def processes(train: dict[str, Any], count_gpus: bool) -> int:
    value = train.get("processes", "auto")
    if value != "auto":
        return int(value)
    if not count_gpus:
        return 1
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def check_batch(params: dict[str, Any], sections: set[str], count_gpus: bool) -> None:
    """Each global batch must split into per-device batches x processes (gradient accumulation does the rest)."""
    train = params["train"]
    world = processes(train, count_gpus)
    batches = [("train.global_batch", train["global_batch"])]
    if "sanity" in sections and params["sanity"].get("global_batch") is not None:
        batches.append(("sanity.global_batch", params["sanity"]["global_batch"]))
    for key, global_batch in batches:
        per_device = min(train["per_device_batch"], global_batch)  # as stages.train does
        if global_batch % (per_device * world):
            fits = [d for d in range(1, global_batch + 1) if global_batch % (d * world) == 0]
            raise _fail(key, global_batch,
                        f"not divisible by train.per_device_batch={per_device} x {world} process(es); "
                        f"per_device_batch could be {', '.join(map(str, fits)) or 'none (change ' + key + ')'}")


def check_lr_scheduler(params: dict[str, Any]) -> None:
    from transformers.trainer_utils import SchedulerType

    value = params["train"]["lr_scheduler"]
    valid = [s.value for s in SchedulerType]
    if value not in valid:
        raise _fail("train.lr_scheduler", value, f"unknown scheduler; valid: {', '.join(valid)}")


def check_cross_keys(params: dict[str, Any], sections: set[str]) -> None:
    if "demo" in sections and params["demo"]["min_chars"] > params["demo"]["max_chars"]:
        raise _fail("demo.min_chars", params["demo"]["min_chars"],
                    f"is above demo.max_chars={params['demo']['max_chars']}")
    if "eval" in sections and params["eval"]["max_new_tokens"] >= params["eval"]["n_ctx"]:
        raise _fail("eval.max_new_tokens", params["eval"]["max_new_tokens"],
                    f"leaves no room for the prompt in eval.n_ctx={params['eval']['n_ctx']}; raise eval.n_ctx")


def minimal_example_tokens(tokenizer, params: dict[str, Any]) -> int:
    from stages.prompt import answer_text
    from stages.train import encode_example

    fields = params["schema"]["fields"]
    output = {"persons": [{f: MINIMAL_OUTPUT["persons"][0].get(f) for f in fields}]}
    ids, _ = encode_example(tokenizer, params["prompt"]["system"], MINIMAL_ARTICLE, answer_text(output, fields))
    return len(ids)


def check_sequence_budget(params: dict[str, Any], tokenizer) -> int:
    """base.max_seq_length must hold the system prompt, a one-line article and a one-person answer."""
    need = minimal_example_tokens(tokenizer, params)
    have = int(params["base"]["max_seq_length"])
    if have < need:
        raise _fail("base.max_seq_length", have,
                    f"too small: the system prompt, a one-line article and a one-person answer already take "
                    f"{need} tokens; raise it (articles of 100-200 characters need about {need + 300})")
    return need


def validate(params: dict[str, Any], stage: str, base_dir: Path | str | None = None) -> None:
    """Raise a JinmeiError naming the first wrong params.yaml key that `stage` or a later stage reads.

    base_dir (training stages): the materialised base model; its tokenizer checks base.max_seq_length.
    """
    if stage not in STAGES:
        raise ValueError(f"validate: unknown stage {stage!r}")
    check_keys(params)
    later = STAGES[STAGES.index(stage):]
    # this stage's sections must be there; a later stage's are checked now if present, and required there.
    # corpus.path is read by dvc.yaml, which fails first without it.
    own = set(READS[stage]) - {"corpus"}
    sections = own | {name for s in later for name in READS[s] if name in params}
    for name in SCHEMA:
        if name in sections:
            check_section(params, name)
    check_cross_keys(params, sections)
    if "train" in sections:
        check_batch(params, sections, count_gpus=stage in TRAINING)
    if stage in TRAINING:
        check_lr_scheduler(params)
    if "quantize" in sections:
        check_quantize_name(params)
        check_quantize_type(params, required=stage == "quantize")
    if stage == "base":  # the stage that loads it; `dvc repro split` must not need the model
        check_base_model(params)
    if base_dir is not None and "base" in sections:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        check_sequence_budget(params, tokenizer)


def main(argv: list[str] | None = None) -> None:
    """`python -m stages.validate [--stage S]`: check params.yaml by hand, as the stages do."""
    import argparse

    from stages.common import load_params

    parser = argparse.ArgumentParser(description="Check params.yaml as the pipeline stages do (no heavy work).")
    parser.add_argument("--stage", choices=STAGES, default="demo",
                        help="check what this stage and the later ones read (default: demo = every stage)")
    parser.add_argument("--base-dir", type=Path, help="a materialised base model: also check base.max_seq_length")
    args = parser.parse_args(argv)
    params = load_params()
    validate(params, args.stage, base_dir=args.base_dir)
    if STAGES.index(args.stage) < STAGES.index("base"):
        check_base_model(params)
    print(f"params.yaml: OK for stage {args.stage} and the stages after it")


if __name__ == "__main__":
    from stages.common import run_main

    run_main(main)
