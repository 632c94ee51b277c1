"""Fold the LoRA adapter into the base weights (models/merged).

The GGUF converter and llama.cpp know nothing of adapters; they need one plain HF folder with the
same tokenizer and chat template the model was trained with.
"""
from __future__ import annotations

import json
from pathlib import Path

from jinmei.errors import JinmeiError
from jinmei.files import atomic_path, numel, require_free_disk, safetensors_shapes
from jinmei.model.hfmodel import check_model_dir, save_tokenizer

DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_adapter_dir(path: Path) -> dict:
    if not path.is_dir():
        raise JinmeiError(f"{path}: adapter folder not found; run the training stage first")
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise JinmeiError(f"{path}: no adapter_config.json; expected a PEFT adapter saved with model.save_pretrained")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JinmeiError(f"{config_path}: not valid JSON ({e}); rerun the training stage") from e
    if config.get("peft_type") != "LORA":
        raise JinmeiError(f"{config_path}: peft_type is {config.get('peft_type')!r}; only LoRA adapters are merged")
    if not (path / "adapter_model.safetensors").is_file():  # never an adapter_model.bin: no unpickling of weights
        raise JinmeiError(f"{path}: no adapter_model.safetensors; rerun the training stage")
    return config


def check_adapter_tokenizer(adapter_dir: Path, base_tokenizer) -> None:
    """The merged model keeps the base tokenizer; a tokenizer saved with the adapter must not disagree."""
    from transformers import AutoTokenizer

    if not (adapter_dir / "tokenizer_config.json").is_file():
        return
    saved = AutoTokenizer.from_pretrained(adapter_dir)
    if saved.get_vocab() != base_tokenizer.get_vocab() or saved.chat_template != base_tokenizer.chat_template:
        raise JinmeiError(f"{adapter_dir}: the tokenizer saved with the adapter differs from the base's "
                          "(vocabulary or chat template); training must not change the tokenizer")


def resolve_dtype(name: str, base_dir: Path):
    """auto = bfloat16 on a GPU, the dtype the base was saved in on CPU."""
    import torch

    if name not in DTYPES:
        raise JinmeiError(f"params.yaml merge.dtype: '{name}' is not one of {list(DTYPES)}")
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    saved = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, saved)


def merge(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype_name: str = "auto") -> dict:
    """Merge and save atomically; returns what was done (for the log)."""
    import torch
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    check_model_dir(base_dir, "base model")
    check_adapter_dir(adapter_dir)
    save_dtype = resolve_dtype(dtype_name, base_dir)
    merged_bytes = sum(numel(shape) for shape in safetensors_shapes(base_dir).values()) * save_dtype.itemsize
    require_free_disk(out_dir.parent, merged_bytes, "the merged model")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not tokenizer.chat_template:
        raise JinmeiError(f"{base_dir}: tokenizer has no chat template; rerun the base stage")
    check_adapter_tokenizer(adapter_dir, tokenizer)
    on_gpu = torch.cuda.is_available()
    # CPU: add the LoRA delta in float32, so a bf16 base does not round it away before saving.
    work_dtype = save_dtype if on_gpu else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=work_dtype, use_safetensors=True,
                                                device_map={"": 0} if on_gpu else None)
    try:
        peft_config = PeftConfig.from_pretrained(adapter_dir)
        weights = load_peft_weights(str(adapter_dir), device="cuda:0" if on_gpu else "cpu")
    except Exception as e:  # corrupt safetensors, unreadable config: one clear line
        raise JinmeiError(f"{adapter_dir}: cannot read the adapter ({type(e).__name__}: {e}); rerun the training stage") from e
    not_this_base = f"{adapter_dir}: adapter does not fit the base in {base_dir}"
    try:
        model = get_peft_model(base, peft_config)
        result = set_peft_model_state_dict(model, weights)
    except (RuntimeError, ValueError) as e:  # shape mismatch, target module absent
        first = str(e).strip().splitlines()
        raise JinmeiError(f"{not_this_base} ({first[min(1, len(first) - 1)].strip()}); was it trained on this base?") from e
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise JinmeiError(f"{not_this_base} ({len(missing)} LoRA weights missing, {len(result.unexpected_keys)} "
                          f"unexpected, e.g. {(missing + list(result.unexpected_keys))[:2]}); was it trained on this base?")
    merged = model.merge_and_unload().to(save_dtype)
    try:
        merged.generation_config = GenerationConfig.from_pretrained(base_dir)
    except OSError:
        pass
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp, base_dir)
    return {"lora_tensors": len(weights), "dtype": str(save_dtype).removeprefix("torch.")}
