"""Tiny random models of real instruct-model families, with their real tokenizers and chat templates.

`build_family_model(family, out_dir)` writes a plain Hugging Face model folder (safetensors, config.json,
generation_config.json, tokenizer files, chat template) for a TINY randomly initialised model of the
family's architecture whose tokenizer is the family's real one, rebuilt from the vocabularies llama.cpp
vendors for its own tokenizer tests (`models/ggml-vocab-*.gguf`, shipped in the llama-cpp-python sdist)
and whose chat template is the family's real `.jinja` template (`models/templates/`).

The tokenizers are rebuilt here, not by transformers' GGUF loader: for these vocabularies transformers
5.17 builds a Llama-3 tokenizer with the GPT-2 regex and EOS = BOS, a SentencePiece tokenizer that
disagrees with the original on 45 of 47 of llama.cpp's test strings, and cannot read the Gemma-4 one.
Each rebuilt tokenizer reproduces its vocabulary's `.inp`/`.out` test vectors (the original HF
tokenizer's ids, written by llama.cpp's convert_hf_to_gguf_update.py): `check_test_vectors`.

Where the vendored vocabulary is not exactly the family's (no llm-jp vocabulary is vendored; Mistral's
own 32000-piece SentencePiece vocabulary is not, Llama-2's is), FAMILY_SPECS says which stands in.

Get the vendor folder with:
    python3 -m pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsdist
    tar xzf /tmp/llsdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsdist
    mkdir -p build/llama-vendor && cp -r /tmp/llsdist/llama_cpp_python-0.3.36/vendor/llama.cpp/models build/llama-vendor/
or point JINMEI_LLAMA_VENDOR at such a `models` folder.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENDOR_HINT = ("llama.cpp's vendored models folder (ggml-vocab-*.gguf, templates/*.jinja) is missing: extract "
               "vendor/llama.cpp/models/ from the llama-cpp-python 0.3.36 sdist to build/llama-vendor/models "
               "(see tests/families.py) or set JINMEI_LLAMA_VENDOR")


def vendor_dir() -> Path:
    """llama.cpp's `models` folder: $JINMEI_LLAMA_VENDOR, else build/llama-vendor/models (skip/raise if absent)."""
    path = Path(os.environ.get("JINMEI_LLAMA_VENDOR") or ROOT / "build" / "llama-vendor" / "models")
    if (path / "templates").is_dir() and any(path.glob("ggml-vocab-*.gguf")):
        return path
    message = f"{path}: {VENDOR_HINT}"
    if "pytest" in sys.modules:
        import pytest

        pytest.skip(message)
    raise FileNotFoundError(message)


# ---------------------------------------------------------------- reading a vocabulary GGUF

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}


def read_gguf_kv(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (a small reader: gguf's GGUFReader takes ~15 s on 280k merges)."""
    import numpy as np

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        pos = 24

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + n
            return bytes(buf[pos - n:pos]).decode("utf-8")

        def value(kind: int):
            nonlocal pos
            if kind == 8:
                return string()
            if kind == 9:
                elem, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                if elem == 8:
                    return [string() for _ in range(count)]
                if elem == 9:
                    return [value(9) for _ in range(count)]
                dtype = np.dtype(_NUMPY[elem])
                arr = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).copy()
                pos += dtype.itemsize * count
                return arr.astype(bool).tolist() if elem == 7 else arr.tolist()
            fmt = _SCALAR[kind]
            (v,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v

        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            kv[key] = value(kind)
        return kv


@lru_cache(maxsize=4)
def vocab_gguf(name: str) -> dict[str, Any]:
    """tokenizer.* metadata of models/ggml-vocab-{name}.gguf."""
    kv = read_gguf_kv(vendor_dir() / f"ggml-vocab-{name}.gguf")
    return {k: v for k, v in kv.items() if k.startswith(("tokenizer.", "general."))}


# GGUF token types (gguf.TokenType), the same numbers as SentencePiece's piece types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# ---------------------------------------------------------------- the families

@dataclass(frozen=True)
class Added:
    """An added token of the real tokenizer (tokenizer.json `added_tokens`)."""
    id: int
    content: str
    special: bool = True
    rstrip: bool = False


@dataclass(frozen=True)
class FamilySpec:
    name: str
    architecture: str                 # HF class in config.json `architectures`
    vocab: str                        # models/ggml-vocab-{vocab}.gguf
    template: str                     # models/templates/{template}
    tokenizer: str                    # "llama3-bpe" | "qwen2-bpe" | "spm-legacy" | "gemma4-bpe"
    bos: str | None
    eos: str                          # tokenizer.eos_token: what ends the assistant's turn
    pad: str                          # an existing token, never a new one
    end_of_turn: str                  # the token the chat template closes an assistant turn with
    add_bos_token: bool               # does the tokenizer itself prepend BOS (tokenizer(text))
    tokenizer_class: str              # tokenizer_config.json `tokenizer_class`, as the real model names it
    unk: str | None = None
    n_base: int | None = None         # pieces of the base vocabulary (the rest are added tokens)
    added: tuple[Added, ...] = ()     # added tokens that replace the vendored vocabulary's placeholders
    renames: tuple[tuple[int, str], ...] = ()   # token id -> the family's own name for it
    config: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    stands_in: str = ""               # what differs from the real family, if anything
    vocab_size: int | None = None     # config.json vocab_size (embedding rows), default: the vocabulary's
    target_modules: tuple[str, ...] = ()  # lora.target_modules where the family fuses the recipe's projections


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen2.5's added tokens after <|endoftext|> <|im_start|> <|im_end|> (151643-151645), then Qwen3's four.
QWEN25_ADDED = tuple(Added(151643 + i, t, special) for i, (t, special) in enumerate([
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False)]))
QWEN3_ADDED = QWEN25_ADDED + tuple(Added(151665 + i, t, False) for i, t in enumerate(
    ["<tool_response>", "</tool_response>", "<think>", "</think>"]))

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "initializer_range": 0.02}

FAMILY_SPECS: dict[str, FamilySpec] = {
    "llama3": FamilySpec(
        name="llama3", architecture="LlamaForCausalLM", vocab="llama-bpe",
        template="meta-llama-Llama-3.1-8B-Instruct.jinja", tokenizer="llama3-bpe",
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", end_of_turn="<|eot_id|>",
        add_bos_token=True, n_base=128000, tokenizer_class="PreTrainedTokenizerFast",
        # the vendored vocabulary is Meta-Llama-3-8B's (3.0); Llama 3.1 named three reserved tokens
        renames=((128004, "<|finetune_right_pad_id|>"), (128008, "<|eom_id|>"), (128010, "<|python_tag|>")),
        config={"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192},
                "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]},
        generation={"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "do_sample": True,
                    "temperature": 0.6, "top_p": 0.9},
        tokenizer_config={"model_max_length": 131072, "clean_up_tokenization_spaces": True},
        stands_in="vocabulary of Meta-Llama-3-8B with Llama 3.1's names for ids 128004/128008/128010"),
    "qwen2": FamilySpec(
        name="qwen2", architecture="Qwen2ForCausalLM", vocab="qwen2", template="Qwen-Qwen2.5-7B-Instruct.jinja",
        tokenizer="qwen2-bpe", bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn="<|im_end|>",
        add_bos_token=False, n_base=151643, added=QWEN25_ADDED, tokenizer_class="Qwen2Tokenizer", vocab_size=151936,
        config={"rope_theta": 1000000.0, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None,
                "bos_token_id": 151643, "eos_token_id": 151645},
        generation={"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                    "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
        tokenizer_config={"model_max_length": 131072, "errors": "replace", "split_special_tokens": False,
                          "clean_up_tokenization_spaces": False},
        stands_in="vendored vocabulary is Qwen1.5's (same BPE and pre-tokenizer as Qwen2.5); Qwen2.5's 19 "
                  "added tokens put at their real ids 151646-151664 (the vendored file has [PAD] placeholders)"),
    "qwen3": FamilySpec(
        name="qwen3", architecture="Qwen3ForCausalLM", vocab="qwen2", template="Qwen-Qwen3-0.6B.jinja",
        tokenizer="qwen2-bpe", bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn="<|im_end|>",
        add_bos_token=False, n_base=151643, added=QWEN3_ADDED, tokenizer_class="Qwen2Tokenizer", vocab_size=151936,
        config={"head_dim": 16, "rope_theta": 1000000.0, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": None,
                "bos_token_id": 151643, "eos_token_id": 151645},
        generation={"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                    "do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20},
        tokenizer_config={"model_max_length": 131072, "errors": "replace", "split_special_tokens": False,
                          "clean_up_tokenization_spaces": False},
        stands_in="Qwen3 uses Qwen2.5's tokenizer; vendored vocabulary is Qwen1.5's with Qwen3's 23 added tokens "
                  "at their real ids 151646-151668"),
    "mistral": FamilySpec(
        name="mistral", architecture="MistralForCausalLM", vocab="llama-spm",
        template="mistralai-Mistral-Nemo-Instruct-2407.jinja", tokenizer="spm-legacy",
        bos="<s>", eos="</s>", pad="<unk>", unk="<unk>", end_of_turn="</s>", add_bos_token=True, n_base=32000,
        tokenizer_class="LlamaTokenizer",
        config={"rope_theta": 1000000.0, "max_position_embeddings": 32768, "rms_norm_eps": 1e-5,
                "sliding_window": None, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2},
        generation={"bos_token_id": 1, "eos_token_id": 2},
        tokenizer_config={"model_max_length": 32768, "legacy": True, "clean_up_tokenization_spaces": False,
                          "add_bos_token": True, "add_eos_token": False},
        stands_in="Llama-2's 32000-piece SentencePiece vocabulary stands in for Mistral-7B-v0.1/v0.2's own "
                  "(same kind: SentencePiece BPE, byte fallback, <s>/</s>, [INST] as plain text); template "
                  "Mistral-Nemo-Instruct-2407's [INST]...[/INST] (Mistral v0.3 format)"),
    "phi3": FamilySpec(
        name="phi3", architecture="Phi3ForCausalLM", vocab="phi-3", template="microsoft-Phi-3.5-mini-instruct.jinja",
        target_modules=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        tokenizer="spm-legacy", bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>",
        end_of_turn="<|end|>", add_bos_token=False, n_base=32000, tokenizer_class="LlamaTokenizer",
        # Phi-3's added tokens: <|endoftext|> and 10 chat/placeholder tokens that strip whitespace after them
        added=(Added(32000, "<|endoftext|>"),) + tuple(Added(32001 + i, t, True, rstrip=True) for i, t in enumerate(
            ["<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>",
             "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"])),
        vocab_size=32064,
        config={"max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
                "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 32000,
                "pad_token_id": 32000, "sliding_window": 262144},
        generation={"bos_token_id": 1, "eos_token_id": [32007, 32001, 32000], "pad_token_id": 32000},
        tokenizer_config={"model_max_length": 131072, "legacy": False, "clean_up_tokenization_spaces": False,
                          "padding_side": "left", "add_bos_token": False, "add_eos_token": False},
        stands_in="vocabulary of Phi-3-mini-4k-instruct (Phi-3.5-mini-instruct has the same tokenizer)"),
    "gemma": FamilySpec(
        name="gemma", architecture="Gemma4ForCausalLM", vocab="gemma-4", template="google-gemma-4-31B-it.jinja",
        tokenizer="gemma4-bpe", bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", end_of_turn="<turn|>",
        add_bos_token=True, tokenizer_class="GemmaTokenizer",
        config={"head_dim": 16, "global_head_dim": 32, "hidden_size_per_layer_input": 0,
                "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 512,
                "final_logit_softcapping": 30.0, "max_position_embeddings": 131072, "tie_word_embeddings": True,
                "bos_token_id": 2, "eos_token_id": 1, "hidden_activation": "gelu_pytorch_tanh"},
        generation={"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0},
        tokenizer_config={"model_max_length": 131072, "clean_up_tokenization_spaces": False, "padding_side": "left",
                          "add_bos_token": True, "add_eos_token": False},
        stands_in="Gemma 4 (text-only Gemma4ForCausalLM), not Gemma 2/3: the only Gemma vocabulary vendored is "
                  "Gemma 4's, a merges-only BPE without SentencePiece scores (so no honest tokenizer.model for "
                  "Gemma 2/3 can be made), and the vendored Gemma 2 template refuses a system turn"),
    "llmjp": FamilySpec(
        name="llmjp", architecture="LlamaForCausalLM", vocab="llama-spm", template="",
        tokenizer="spm-legacy", bos="<s>", eos="</s>", pad="<unk>", unk="<unk>", end_of_turn="</s>",
        add_bos_token=True, n_base=32000, tokenizer_class="PreTrainedTokenizerFast",
        config={"rope_theta": 10000.0, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2},
        generation={"bos_token_id": 1, "eos_token_id": 2},
        tokenizer_config={"model_max_length": 4096, "legacy": True, "clean_up_tokenization_spaces": False},
        stands_in="no llm-jp vocabulary is vendored: Llama-2's SentencePiece vocabulary stands in for "
                  "llm-jp-3's 99487-token one (same kind: SentencePiece, <s>/</s>, BOS added by the tokenizer); "
                  "no llm-jp template is vendored either: LLMJP_TEMPLATE is llm-jp-3-*-instruct's, written here"),
}

# llm-jp-3-*-instruct's chat template (tokenizer_config.json of llm-jp/llm-jp-3-1.8b-instruct), not vendored.
LLMJP_TEMPLATE = (
    "{{bos_token}}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\n### 指示:\\n' + message['content'] }}"
    "{% elif message['role'] == 'system' %}{{ '以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。' }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\n### 応答:\\n' + message['content'] + eos_token }}"
    "{% endif %}{% if loop.last and add_generation_prompt %}{{ '\\n\\n### 応答:\\n' }}{% endif %}{% endfor %}")

FAMILIES: tuple[str, ...] = tuple(FAMILY_SPECS)


def chat_template(spec: FamilySpec) -> str:
    if not spec.template:
        return LLMJP_TEMPLATE
    return (vendor_dir() / "templates" / spec.template).read_text(encoding="utf-8")


# ---------------------------------------------------------------- tokenizers

def _base_and_added(spec: FamilySpec) -> tuple[list[str], list[int], list[Added]]:
    """Base-vocabulary pieces (ids < n_base) and the family's added tokens (ids >= n_base, plus controls)."""
    kv = vocab_gguf(spec.vocab)
    tokens = list(kv["tokenizer.ggml.tokens"])
    types = list(kv["tokenizer.ggml.token_type"])
    for token_id, name in spec.renames:
        tokens[token_id] = name
    n_base = spec.n_base or len(tokens)
    if spec.added:
        added = list(spec.added)
    else:  # every token after the base vocabulary is an added one (Llama 3's 256 special tokens)
        added = [Added(i, tokens[i], types[i] == CONTROL) for i in range(n_base, len(tokens))]
    for a in added:
        if a.id < n_base:
            raise ValueError(f"{spec.name}: added token {a.content!r} at {a.id} inside the base vocabulary")
    return tokens[:n_base], types[:n_base], added


def _add_tokens(tok, added: list[Added]) -> None:
    """Add the added tokens in id order, each at exactly its real id."""
    from tokenizers import AddedToken

    for a in sorted(added, key=lambda a: a.id):
        if a.id != tok.get_vocab_size(with_added_tokens=True) and tok.token_to_id(a.content) != a.id:
            raise ValueError(f"added token {a.content!r} would not get its id {a.id}")
        token = AddedToken(a.content, special=a.special, normalized=False, rstrip=a.rstrip, lstrip=False,
                           single_word=False)
        (tok.add_special_tokens if a.special else tok.add_tokens)([token])
        if tok.token_to_id(a.content) != a.id:
            raise ValueError(f"added token {a.content!r} got id {tok.token_to_id(a.content)}, not {a.id}")


def _bytelevel_tokenizer(spec: FamilySpec):
    """Byte-level BPE (GPT-2 bytes) with the family's split regex, as in Llama 3's and Qwen2.5's tokenizer.json."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokens, _types, added = _base_and_added(spec)
    merges = [tuple(m.split(" ", 1)) for m in vocab_gguf(spec.vocab)["tokenizer.ggml.merges"]]
    llama3 = spec.tokenizer == "llama3-bpe"
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, dropout=None,
                               unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False, ignore_merges=llama3))
    tok.normalizer = None if llama3 else normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX if llama3 else QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    _add_tokens(tok, added)
    byte_level = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    if spec.add_bos_token:
        bos_id = tok.token_to_id(spec.bos)
        tok.post_processor = processors.Sequence([byte_level, processors.TemplateProcessing(
            single=f"{spec.bos}:0 $A:0", pair=f"{spec.bos}:0 $A:0 {spec.bos}:1 $B:1",
            special_tokens=[(spec.bos, bos_id)])])
    else:
        tok.post_processor = byte_level
    return tok, None


def _spm_merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges implied by SentencePiece scores, exactly as transformers' SentencePieceExtractor makes them."""
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = []
    for piece, score in zip(pieces, scores):
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _spm_model_proto(pieces: list[str], scores: list[float], types: list[int], *, add_dummy_prefix: bool,
                     unk_id: int, bos_id: int, eos_id: int) -> bytes:
    """A SentencePiece BPE model (tokenizer.model) holding the base vocabulary, as Llama 2 / Phi-3 ship it."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for piece, score, kind in zip(pieces, scores, types):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
        entry.type = kind if kind in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) else NORMAL
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = unk_id, bos_id, eos_id, -1
    trainer.split_digits = True
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = add_dummy_prefix
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def _spm_tokenizer(spec: FamilySpec):
    """SentencePiece BPE as HF's (legacy) LlamaConverter writes it: ▁ prefix and spaces, byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    kv = vocab_gguf(spec.vocab)
    pieces, types, added = _base_and_added(spec)
    scores = list(kv["tokenizer.ggml.scores"])[:len(pieces)]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=_spm_merges(pieces, scores),
                               unk_token=spec.unk, fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # the base vocabulary's control/unknown pieces (<unk> <s> </s>) are added tokens too, as in Llama 2's file;
    # Phi-3's tokenizer.json has rstrip on </s> (llama.cpp's phi-3 special case mirrors it)
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(p, special=True, normalized=False, rstrip=(spec.name == "phi3" and p == "</s>"))
                            for p, t in zip(pieces, types) if t in (CONTROL, UNKNOWN)])
    _add_tokens(tok, added)
    if spec.add_bos_token:
        bos_id = tok.token_to_id(spec.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos}:0 $A:0", pair=f"{spec.bos}:0 $A:0 {spec.bos}:1 $B:1",
            special_tokens=[(spec.bos, bos_id)])
    model_proto = _spm_model_proto(pieces, scores, types, add_dummy_prefix=True,
                                   unk_id=pieces.index(spec.unk), bos_id=pieces.index("<s>"),
                                   eos_id=pieces.index("</s>"))
    return tok, model_proto


def _gemma4_tokenizer(spec: FamilySpec):
    """Gemma 4's BPE over raw UTF-8, ▁ for spaces, byte fallback (transformers' GemmaTokenizer pipeline)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    kv = vocab_gguf(spec.vocab)
    tokens, types = list(kv["tokenizer.ggml.tokens"]), list(kv["tokenizer.ggml.token_type"])
    merges = [tuple(m.split(" ", 1)) for m in kv["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=True,
                               unk_token=spec.unk, dropout=None, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    # control tokens are special; the tool/channel markers (user-defined in the GGUF) are plain added tokens
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise ValueError("gemma: added tokens changed the vocabulary size")
    return tok, None


def _extra_special_tokens(spec: FamilySpec) -> list[str]:
    """Gemma 4's other control tokens (<|turn>, <turn|>, ...) are special tokens of its tokenizer; without them
    in all_special_tokens llama.cpp's converter types them NORMAL and llama.cpp no longer parses `<|turn>`."""
    if spec.tokenizer != "gemma4-bpe":
        return []
    kv = vocab_gguf(spec.vocab)
    named = {spec.bos, spec.eos, spec.pad, spec.unk, "<mask>"}
    return [t for t, k in zip(kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"])
            if k == CONTROL and t not in named]


BUILDERS = {"llama3-bpe": _bytelevel_tokenizer, "qwen2-bpe": _bytelevel_tokenizer, "spm-legacy": _spm_tokenizer,
            "gemma4-bpe": _gemma4_tokenizer}

# Japanese news prose plus what trips tokenizers: full/half width, a combining voiced mark, a surrogate-pair
# kanji, an emoji ZWJ sequence, double spaces, tabs and blank lines.
JAPANESE = ("東京都港区の会社員、山田太郎さん(45)が2026年11月24日に逮捕された。 Tel 03-1234-5678; it's  OK!\n\n"
            "\tｶﾀｶﾅ ＡＢＣ １２３　全角スペース、①②、𠮷野家、ｷﾞｮｰｻﾞ、絵文字🙇‍♂️。")


def probe_conversation(system: str = "Extract the persons from the Japanese news article as JSON.") -> list[dict]:
    """System + a Japanese article as the user's turn (how the pipeline prompts)."""
    return [{"role": "system", "content": system}, {"role": "user", "content": JAPANESE}]


def build_tokenizer(family: str):
    """(the family's tokenizer as built, with its special tokens and chat template; tokenizer.model bytes or None).

    A model folder holds what AutoTokenizer reads back from this (`save_tokenizer` checks the two agree).
    """
    from transformers import PreTrainedTokenizerFast

    spec = FAMILY_SPECS[family]
    backend, model_proto = BUILDERS[spec.tokenizer](spec)
    specials = {"bos_token": spec.bos, "eos_token": spec.eos, "pad_token": spec.pad, "unk_token": spec.unk}
    for role, token in specials.items():
        if token is not None and backend.token_to_id(token) is None:
            raise ValueError(f"{family}: {role} {token!r} is not in the vocabulary")
    extra = {k: v for k, v in spec.tokenizer_config.items() if k not in ("add_bos_token", "add_eos_token")}
    if extra_special := _extra_special_tokens(spec):
        extra["extra_special_tokens"] = extra_special
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=chat_template(spec), add_bos_token=spec.add_bos_token,
        add_eos_token=False, **specials, **extra)
    return tokenizer, model_proto


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def save_tokenizer(tokenizer, model_proto: bytes | None, spec: FamilySpec, out_dir: Path):
    """Save as the real model's folder has it (its tokenizer_class); return what AutoTokenizer reads back.

    Raises if the tokenizer read back tokenizes Japanese text or the chat template's render differently
    from the one built, or lost a special token or the template.
    """
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(out_dir)
    if model_proto is not None:
        (out_dir / "tokenizer.model").write_bytes(model_proto)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(spec.tokenizer_config)  # transformers 5 does not write add_bos_token; real configs may have it
    config["tokenizer_class"] = spec.tokenizer_class
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    loaded = AutoTokenizer.from_pretrained(out_dir)
    check_same_tokenizer(tokenizer, loaded, f"{spec.name}: {type(loaded).__name__} read back from {out_dir}")
    return loaded


def check_same_tokenizer(a, b, what: str) -> None:
    """Raise unless b tokenizes like a (Japanese text, the chat template's render) and has a's specials."""
    rendered = a.apply_chat_template(probe_conversation(), tokenize=False, add_generation_prompt=True)
    for text in (JAPANESE, rendered):
        ids_a, ids_b = a(text)["input_ids"], b(text)["input_ids"]
        if ids_a != ids_b:
            i = _first_difference(ids_a, ids_b)
            raise ValueError(f"{what} tokenizes {text[:30]!r} differently at token {i}: "
                             f"{ids_a[i:i + 4]} vs {ids_b[i:i + 4]}")
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(a, role) != getattr(b, role):
            raise ValueError(f"{what}: {role} is {getattr(b, role)!r}, not {getattr(a, role)!r}")
    if a.chat_template != b.chat_template:
        raise ValueError(f"{what}: the chat template differs")


def check_test_vectors(tokenizer, vocab: str) -> list[str]:
    """llama.cpp's test strings for a vocabulary whose ids the tokenizer does not reproduce (empty: all match)."""
    folder = vendor_dir()
    texts = (folder / f"ggml-vocab-{vocab}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    wanted = (folder / f"ggml-vocab-{vocab}.gguf.out").read_text(encoding="utf-8").split("\n")
    bad = []
    for text, ids in zip(texts, wanted):
        want = [int(x) for x in ids.split()]
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if got != want:
            bad.append(f"{text[:30]!r}: original {want[:8]} rebuilt {got[:8]}")
    return bad


# ---------------------------------------------------------------- the model folder

CONFIGS = {"LlamaForCausalLM": "LlamaConfig", "Qwen2ForCausalLM": "Qwen2Config", "Qwen3ForCausalLM": "Qwen3Config",
           "MistralForCausalLM": "MistralConfig", "Phi3ForCausalLM": "Phi3Config",
           "Gemma4ForCausalLM": "Gemma4TextConfig"}


def _config(spec: FamilySpec, vocab_size: int, pad_id: int):
    import transformers

    extra = dict(spec.config)
    extra.setdefault("pad_token_id", pad_id)
    return getattr(transformers, CONFIGS[spec.architecture])(vocab_size=vocab_size, architectures=[spec.architecture],
                                                             **TINY, **extra)


def build_family_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random model of `family` with its real tokenizer and chat template to out_dir (returned)."""
    import torch
    import transformers
    from transformers import GenerationConfig

    if family not in FAMILY_SPECS:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    spec = FAMILY_SPECS[family]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, model_proto = build_tokenizer(family)
    vocab_size = spec.vocab_size or len(tokenizer)
    if len(tokenizer) > vocab_size:
        raise ValueError(f"{family}: {len(tokenizer)} tokens do not fit {vocab_size} embedding rows")
    config = _config(spec, vocab_size, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = getattr(transformers, spec.architecture)(config).eval()
    model.generation_config = GenerationConfig(**spec.generation)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, model_proto, spec, out_dir)
    return out_dir
