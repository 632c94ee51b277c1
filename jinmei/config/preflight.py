"""Checks that can only refuse a run: what would fail hours later is refused in seconds, at the first stage.

Each stage calls `check(stage, ...)` after `params.load`. It checks what this stage and every later one
needs: the batch geometry, the scheduler and quantization type names, that the base model can be reached
offline, that eval.n_ctx, base.max_seq_length and lora.r fit the base model (its trained context and width, read
from its config where that needs no download), that the sequence budget and eval's context hold a minimal
example, that lora.target_modules name modules of the model, that the training backend and process count fit this
machine, and that the chat template is one every stage (training masks, GGUF, Ollama Modelfile) can serve.
Nothing here writes or changes an output, so no stage lists this module as a dependency in dvc.yaml
(tests/test_layout.py).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

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
    from jinmei.model.basemodel import hub_revision

    hub_revision(spec, p.base.revision)  # a hub id without its commit, or a commit for a folder: refused first
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

    if not isinstance(try_to_load_from_cache(spec, "config.json", revision=p.base.revision), str):
        raise _fail("base.model", spec,
                    f"neither a local folder nor in the Hugging Face cache at revision {p.base.revision}, and stages "
                    f"run offline. Fix: run `hf download {spec} --revision {p.base.revision}` (or the base stage "
                    "once with JINMEI_ALLOW_HUB=1), or set base.model to a local folder, bundled:smollm2-135m-instruct "
                    "or tiny-random")


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


# ---------------------------------------------------------------- what the base model allows, known without loading it

# The bundled GGUF's llama.context_length and llama.embedding_length, and tiny-random's LlamaConfig
# (jinmei.model.basemodel.tiny_model): tests/config/test_library_limits.py reads them from the real thing.
KNOWN_BASES: dict[str, dict[str, int]] = {"bundled:smollm2-135m-instruct": {"context": 8192, "hidden_size": 576}}
TINY_CONTEXT = 8192
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")


def _config_json(p: Params, base_dir: Path | str | None) -> tuple[Path, dict] | None:
    """config.json of the materialised base, of a local base.model folder, or of base.model in the HF cache."""
    spec = p.base.model.strip()
    candidates = [Path(base_dir) / "config.json"] if base_dir is not None else []
    if not spec.startswith("bundled:") and spec != "tiny-random":
        candidates.append(Path(spec).expanduser() / "config.json")
        if "/" in spec and not spec.startswith(("/", ".", "~")) and spec.count("/") == 1:
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(spec, "config.json", revision=p.base.revision)
                if isinstance(cached, str):
                    candidates.append(Path(cached))
            except Exception:  # an odd cache or hub id: the base stage, which loads the model, says what is wrong
                pass
    for path in candidates:
        if path.is_file():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(config, dict):
                return path, config
    return None


def base_limits(p: Params, base_dir: Path | str | None = None) -> dict[str, Any]:
    """The base model's trained context and hidden size where they are known without loading or downloading it:
    {"context": int | None, "hidden_size": int | None, "source": what they were read from}."""
    spec = p.base.model.strip()
    found = _config_json(p, base_dir)
    if found is not None:
        path, config = found
        layers = [config] + [config[k] for k in ("text_config", "llm_config") if isinstance(config.get(k), dict)]

        def first(keys):
            for layer in layers[::-1]:
                for key in keys:
                    if isinstance(layer.get(key), int) and not isinstance(layer.get(key), bool) and layer[key] > 0:
                        return layer[key], key
            return None, None

        (context, context_key), (width, _) = first(CONTEXT_KEYS), first(WIDTH_KEYS)
        return {"context": context, "hidden_size": width, "source": f"{path} ({context_key or 'no context'})"}
    if spec == "tiny-random":
        from jinmei.model.basemodel import DEFAULT_TINY

        return {"context": TINY_CONTEXT, "hidden_size": {**DEFAULT_TINY, **p.base.tiny}["hidden_size"],
                "source": "tiny-random"}
    if spec in KNOWN_BASES:
        return {**KNOWN_BASES[spec], "source": spec}
    return {"context": None, "hidden_size": None, "source": None}


def check_base_limits(p: Params, limits: dict[str, Any]) -> None:
    """eval.n_ctx and base.max_seq_length within the trained context; lora.r within the hidden size."""
    context, width, source = limits["context"], limits["hidden_size"], limits["source"]
    if context is not None:
        for key, value, what in (("eval.n_ctx", p.eval.n_ctx, "llama.cpp would run the model past it"),
                                 ("base.max_seq_length", p.base.max_seq_length,
                                  "training would teach positions the model never saw")):
            if value > context:
                raise _fail(key, value, f"is beyond the {context} tokens the base model was trained on "
                                        f"({source}): {what}; set {key} <= {context}")
    if width is not None and p.lora.r > width:
        raise _fail("lora.r", p.lora.r, f"is above the base model's hidden size {width} ({source}): an adapter's "
                                        f"rank cannot exceed it, the extra rank only adds parameters; set lora.r "
                                        f"<= {width}")


def minimal_prompt_tokens(p: Params, tokenizer) -> int:
    """Tokens of eval's prompt (system prompt + a one-line article, generation prompt) as llama.cpp feeds them."""
    from jinmei.template import chat

    return len(chat.prompt_ids(tokenizer, chat.chat_format(tokenizer), p.prompt.system, MINIMAL_ARTICLE))


def check_eval_budget(p: Params, prompt_tokens: int) -> None:
    """eval.n_ctx must hold the system prompt, a one-line article and eval.max_new_tokens."""
    need = prompt_tokens + p.eval.max_new_tokens
    if p.eval.n_ctx < need:
        raise _fail("eval.n_ctx", p.eval.n_ctx,
                    f"too small: the system prompt and a one-line article already take {prompt_tokens} tokens, "
                    f"eval.max_new_tokens={p.eval.max_new_tokens} more; raise eval.n_ctx to at least {need} plus the "
                    f"longest article (news articles run to 1,000-3,000 tokens), or lower eval.max_new_tokens")


def _optional_tokenizer(p: Params):
    """base.model's tokenizer where it loads without the network (split loads it right after), else None: stages
    before `base` never need the model (the base stage refuses a model it cannot load, with the reason)."""
    try:
        from jinmei.model.basemodel import load_tokenizer

        return load_tokenizer(p.base.model.strip(), p.base.trust_remote_code, p.base.revision)
    except Exception:
        return None


def check_target_modules(p: Params, base_dir: Path | str) -> None:
    """Every lora.target_modules name must match a module of the base model: peft skips a name that matches
    nothing (it refuses only when none match), so a typo would train fewer layers than asked, silently."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # the training stage's own load says what is wrong with the folder
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in p.lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise _fail("lora.target_modules", list(p.lora.target_modules),
                    f"{', '.join(missing)} match no module of the base model ({type(model).__name__}), so peft would "
                    f"leave them out; its linear layers: {', '.join(linear)}")


def check_tiny(p: Params) -> None:
    """base.tiny must make a llama transformers can build and run (base.model: tiny-random)."""
    from jinmei.model.basemodel import DEFAULT_TINY

    sizes = {**DEFAULT_TINY, **p.base.tiny}
    hidden, heads, kv = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_key_value_heads"]
    if hidden % heads or (hidden // heads) % 2:
        raise _fail("base.tiny", dict(p.base.tiny), f"hidden_size={hidden} must be num_attention_heads={heads} x an "
                                                    "even head size (rotary embeddings rotate pairs)")
    if heads % kv:
        raise _fail("base.tiny", dict(p.base.tiny), f"num_attention_heads={heads} must be a multiple of "
                                                    f"num_key_value_heads={kv}")


def check_training_host(p: Params) -> None:
    """train.backend and train.processes this machine can run (the training stages load the model right after)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if p.train.backend == "unsloth":
        if not gpus:
            raise _fail("train.backend", p.train.backend,
                        "Unsloth needs an NVIDIA GPU and this machine has none; use auto (Unsloth where it runs, "
                        "transformers elsewhere) or hf")
        if importlib.util.find_spec("unsloth") is None:
            raise _fail("train.backend", p.train.backend, "Unsloth is not installed (`pip install -e '.[gpu]'`); "
                                                          "use auto or hf")
    missing = [t for t in p.train.report_to if importlib.util.find_spec(t) is None]
    if missing:
        raise _fail("train.report_to", p.train.report_to,
                    f"{', '.join(missing)} is not installed here (`pip install {' '.join(missing)}`); or drop it")
    if p.train.processes != "auto" and gpus and p.train.processes > gpus:
        raise _fail("train.processes", p.train.processes,
                    f"is more than the {gpus} visible GPU(s): each process needs its own; use auto or <= {gpus}")


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
        check_training_host(p)
    if "quantize" in later:
        check_quantize_type(p, required=stage == "quantize")
    if "base" in later and p.base.model.strip() == "tiny-random":
        check_tiny(p)
    check_base_limits(p, base_limits(p, base_dir))
    prompt_tokens = None
    if stage == "base":  # the stage that loads it; `dvc repro split` must not need the model
        check_base_model(p)
        from jinmei.model.basemodel import load_tokenizer

        tokenizer = load_tokenizer(p.base.model.strip(), p.base.trust_remote_code, p.base.revision)
        check_template(p, tokenizer)
        prompt_tokens = minimal_prompt_tokens(p, tokenizer)
    elif stage == "split":  # split loads the tokenizer anyway: eval's budget is checked where it loads offline
        tokenizer = _optional_tokenizer(p)
        try:
            prompt_tokens = minimal_prompt_tokens(p, tokenizer) if tokenizer is not None else None
        except Exception:  # a template later stages cannot serve: the base stage refuses it, with the reason
            prompt_tokens = None
    if base_dir is not None and stage in TRAINING:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        check_template(p, tokenizer)
        check_sequence_budget(p, tokenizer)
        prompt_tokens = minimal_prompt_tokens(p, tokenizer)
        check_target_modules(p, base_dir)
        if stage == "sanity":       # the first stage that trains: what llama.cpp will serve, checked on the vocab
            from jinmei.export.gguf import vocab_check

            found = vocab_check(Path(base_dir), p.prompt.system)
            print(f"preflight: {found['family']} template, end of turn {found['end_of_turn']!r}; llama.cpp feeds "
                  f"the training ids ({found['probe_tokens']} probe tokens, vocab-only GGUF)")
    if prompt_tokens is not None and "eval" in later:
        check_eval_budget(p, prompt_tokens)
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
    if STAGES.index(args.stage) < STAGES.index("base"):  # by hand: also what the base stage will check
        check_base_model(p)
        from jinmei.model.basemodel import load_tokenizer

        tokenizer = load_tokenizer(p.base.model.strip(), p.base.trust_remote_code, p.base.revision)
        check_template(p, tokenizer)
        check_eval_budget(p, minimal_prompt_tokens(p, tokenizer))
    print(f"params.yaml: OK for stage {args.stage} and the stages after it")


if __name__ == "__main__":
    from jinmei.errors import run_main

    run_main(main)
