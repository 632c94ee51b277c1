"""Checks that can only refuse a run: what would fail hours later is refused in seconds, at the first stage.

Each stage calls `check(stage, ...)` after `params.load`. It checks what this stage and every later one
needs: the batch geometry, the scheduler and quantization type names, that the base model can be reached
offline, that the sequence budget holds a minimal example, and that the chat template is one every stage
(training masks, GGUF, Ollama Modelfile) can serve. Nothing here writes or changes an output, so no stage
lists this module as a dependency in dvc.yaml (tests/test_layout.py).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from jinmei.errors import JinmeiError
from jinmei.config.params import STAGES, TRAINING, Params, _fail, load_all

# A short article and a one-person answer: what every training example needs room for at the least.
MINIMAL_ARTICLE = "東京都港区の会社員、山田太郎さん(45)が逮捕された。"
MINIMAL_PERSON = {"name": "山田太郎", "act": "逮捕", "address": "東京都港区", "signature": "会社員"}


def quant_type_names() -> list[str] | None:
    """Types llama.cpp can quantize to (its LLAMA_FTYPE_MOSTLY_* names); None when llama-cpp-python is absent."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from jinmei.export.gguf import quant_types

    return sorted(quant_types())


def check_quantize_type(p: Params, required: bool) -> None:
    valid = quant_type_names()
    if valid is None:
        if required:
            raise JinmeiError("quantize: llama-cpp-python is not installed (`bash scripts/setup.sh`)")
        return
    if p.quantize.type.strip().upper() not in valid:
        raise _fail("quantize.type", p.quantize.type, f"unknown llama.cpp type; valid: {', '.join(valid)}")


def check_base_model(p: Params) -> None:
    """The base model must be reachable without the network (unless JINMEI_ALLOW_HUB=1)."""
    spec = p.base.model.strip()
    if spec == "tiny-random":
        return
    if spec.startswith("bundled:"):
        from jinmei.model.basemodel import bundled_gguf_path

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

    if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
        raise _fail("base.model", spec,
                    "neither a local folder nor in the Hugging Face cache, and stages run offline. Fix: run "
                    f"`hf download {spec}` (or the base stage once with JINMEI_ALLOW_HUB=1), or set base.model "
                    "to a local folder, bundled:smollm2-135m-instruct or tiny-random")


def check_batch(p: Params, count_gpus: bool, with_sanity: bool = True) -> None:
    """Each global batch must split into per-device batches x processes (gradient accumulation does the rest)."""
    from jinmei.train.trainer import process_count

    world = process_count(p.train.processes, count_gpus)
    batches = [("train.global_batch", p.train.global_batch)]
    if with_sanity and p.sanity.global_batch is not None:
        batches.append(("sanity.global_batch", p.sanity.global_batch))
    for key, global_batch in batches:
        per_device = min(p.train.per_device_batch, global_batch)  # as jinmei.train.trainer does
        if global_batch % (per_device * world):
            fits = [d for d in range(1, global_batch + 1) if global_batch % (d * world) == 0]
            raise _fail(key, global_batch,
                        f"not divisible by train.per_device_batch={per_device} x {world} process(es); "
                        f"per_device_batch could be {', '.join(map(str, fits)) or 'none (change ' + key + ')'}")


def check_lr_scheduler(p: Params) -> None:
    from transformers.trainer_utils import SchedulerType

    valid = [s.value for s in SchedulerType]
    if p.train.lr_scheduler not in valid:
        raise _fail("train.lr_scheduler", p.train.lr_scheduler, f"unknown scheduler; valid: {', '.join(valid)}")


def check_sequence_budget(p: Params, tokenizer) -> int:
    """base.max_seq_length must hold the system prompt, a one-line article and a one-person answer."""
    from jinmei.train.examples import encode_example
    from jinmei.template.prompt import answer_text

    fields = p.schema.fields
    output = {"persons": [{f: MINIMAL_PERSON.get(f) for f in fields}]}
    need = len(encode_example(tokenizer, p.prompt.system, MINIMAL_ARTICLE, answer_text(output, fields))[0])
    if p.base.max_seq_length < need:
        raise _fail("base.max_seq_length", p.base.max_seq_length,
                    f"too small: the system prompt, a one-line article and a one-person answer already take "
                    f"{need} tokens; raise it (articles of 100-200 characters need about {need + 300})")
    return need


def check(stage: str, base_dir: Path | str | None = None, params_file: Path | str | None = None) -> Params:
    """Refuse now what `stage` or a later stage would refuse later. base_dir: the materialised base model."""
    if stage not in STAGES:
        raise ValueError(f"preflight: unknown stage {stage!r}")
    p = load_all(params_file)
    later = STAGES[STAGES.index(stage):]
    if set(TRAINING) & set(later):
        check_batch(p, count_gpus=stage in TRAINING, with_sanity="sanity" in later)
    if stage in TRAINING:
        check_lr_scheduler(p)
    if "quantize" in later:
        check_quantize_type(p, required=stage == "quantize")
    if stage == "base":  # the stage that loads it; `dvc repro split` must not need the model
        check_base_model(p)
        from jinmei.model.basemodel import load_tokenizer

        check_template(p, load_tokenizer(p.base.model.strip(), p.base.trust_remote_code))
    if base_dir is not None and stage in TRAINING:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        check_template(p, tokenizer)
        check_sequence_budget(p, tokenizer)
        if stage == "sanity":       # the first stage that trains: what llama.cpp will serve, checked on the vocab
            from jinmei.export.gguf import vocab_check

            found = vocab_check(Path(base_dir), p.prompt.system)
            print(f"preflight: {found['family']} template, end of turn {found['end_of_turn']!r}; llama.cpp feeds "
                  f"the training ids ({found['probe_tokens']} probe tokens, vocab-only GGUF)")
    return p


def check_template(p: Params, tokenizer) -> dict:
    """The chat template renders system + article + answer with the prefix property and an end-of-turn token,
    the same on any day, and has an Ollama Modelfile family; else one message naming the family and the fix."""
    from jinmei.template.chat import check_template as check

    found = check(tokenizer, p.prompt.system)
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise JinmeiError("the base model's tokenizer has neither a pad nor an EOS token; training cannot pad")
    return found


def main(argv: list[str] | None = None) -> None:
    """`python -m jinmei.config.preflight [--stage S]`: check params.yaml by hand, as the stages do."""
    import argparse

    parser = argparse.ArgumentParser(description="Check params.yaml as the pipeline stages do (no heavy work).")
    parser.add_argument("--stage", choices=STAGES, default="demo",
                        help="check what this stage and the later ones read (default: demo = every stage)")
    parser.add_argument("--base-dir", type=Path, help="a materialised base model: also check base.max_seq_length")
    args = parser.parse_args(argv)
    p = check(args.stage, base_dir=args.base_dir)
    if STAGES.index(args.stage) < STAGES.index("base"):
        check_base_model(p)
    print(f"params.yaml: OK for stage {args.stage} and the stages after it")


if __name__ == "__main__":
    from jinmei.errors import run_main

    run_main(main)
