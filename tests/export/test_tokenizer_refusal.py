"""Tokenizers llama.cpp cannot take are refused in one message, not a crash.

Tiny models with real chat templates (Llama-3.3, Phi-3.5) whose tokenizer transformers rebuilt from a llama.cpp
vocabulary GGUF (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`): sanity's vocab-only check used to end in
llama.cpp's `std::out_of_range` abort with a gdb backtrace and advice to uninstall the CUDA build (wrong on a CPU
build), or in the converter's Python traceback (`NotImplementedError: BPE pre-tokenizer was not recognized`,
`ValueError: Missing tokenizer.model`). Now: one line naming the tokenizer's kind, what the converter or llama.cpp
said, and the fix; the CUDA advice only where a CUDA build is installed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import families
from jinmei.errors import JinmeiError
from jinmei.export import gguf as export
from jinmei.infer import engine

SYSTEM = "Extract persons from this Japanese news article as JSON."
TINY = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128}
REBUILT = {  # name: (vendored vocabulary, vendored template, architecture, config class)
    "llama-3.3": ("llama-bpe", "meta-llama-Llama-3.3-70B-Instruct.jinja", "LlamaForCausalLM", "LlamaConfig"),
    "phi-3.5": ("phi-3", "microsoft-Phi-3.5-mini-instruct.jinja", "Phi3ForCausalLM", "Phi3Config"),
}


def rebuilt_model(name: str, out: Path, architecture: str | None = None) -> Path:
    """A tiny random model whose tokenizer transformers rebuilt from llama.cpp's vocabulary GGUF, with the family's
    real chat template."""
    import transformers
    from transformers import AutoTokenizer

    vocab, template, arch, config_class = REBUILT[name]
    arch = architecture or arch
    folder = families.vendor_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=f"ggml-vocab-{vocab}.gguf")
    tokenizer.chat_template = (folder / "templates" / template).read_text(encoding="utf-8")
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), architectures=[arch], **TINY)
    getattr(transformers, arch)(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama33(tmp_path_factory) -> Path:
    return rebuilt_model("llama-3.3", tmp_path_factory.mktemp("llama33") / "base")


@pytest.fixture(scope="module")
def phi35(tmp_path_factory) -> Path:
    return rebuilt_model("phi-3.5", tmp_path_factory.mktemp("phi35") / "base")


@pytest.fixture
def no_llama_worker(monkeypatch):
    """Refusals must come before llama.cpp loads the vocabulary (where it would abort)."""
    def refuse(function, **kwargs):
        raise AssertionError(f"llama.cpp was asked to load the vocabulary ({function})")

    monkeypatch.setattr(engine, "in_worker", refuse)


def one_line(message: str, *words: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message


def cuda_build() -> bool:
    """The truth, asked as scripts/setup.sh asks it."""
    done = subprocess.run([sys.executable, "-c", "import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().endswith("1")


def test_the_llama33_tokenizer_rebuilt_from_a_gguf_is_refused_before_llama_cpp_aborts(llama33, no_llama_worker):
    with pytest.raises(JinmeiError) as info:
        export.vocab_check(llama33, SYSTEM)
    one_line(str(info.value), str(llama33), "tokenizer.json model BPE", "pre-tokenizer ByteLevel", "decoder ByteFallback",
             "SentencePiece vocabulary", "<0x0A>", "std::out_of_range", "original tokenizer files")
    assert "CUDA" not in str(info.value)


def test_the_phi35_tokenizer_rebuilt_from_a_gguf_is_refused_with_what_the_converter_said(phi35):
    with pytest.raises(JinmeiError) as info:
        export.vocab_check(phi35, SYSTEM)
    one_line(str(info.value), "converter cannot convert this tokenizer", "tokenizer.json model BPE",
             "pre-tokenizer none", "no tokenizer.model", "it said: ValueError: Error: Missing", "original tokenizer files")


def test_an_unrecognised_bpe_pre_tokenizer_is_refused_in_one_line(phi35, tmp_path):
    """The same tokenizer under a Llama architecture: the converter's `BPE pre-tokenizer was not recognized`."""
    import shutil

    other = tmp_path / "base"
    shutil.copytree(phi35, other)
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(JinmeiError) as info:
        export.vocab_check(other, SYSTEM)
    one_line(str(info.value), "converter cannot convert this tokenizer", "pre-tokenizer none",
             "NotImplementedError: BPE pre-tokenizer was not recognized", "original tokenizer files")


def test_a_llama_cpp_crash_on_a_tokenizer_names_the_tokenizer_and_no_cuda_advice_on_a_cpu_build(llama33, monkeypatch):
    """Past the byte check (switched off here), llama.cpp aborts while loading the vocabulary: the stage's message
    still names the tokenizer and the fix, and the CUDA advice only where a CUDA build is installed."""
    monkeypatch.setattr(export, "check_byte_tokens", lambda *args: None)
    with pytest.raises(JinmeiError) as info:
        export.vocab_check(llama33, SYSTEM)
    one_line(str(info.value), "crashed loading this tokenizer", "was killed by SIGABRT", "pre-tokenizer ByteLevel",
             "original tokenizer files")
    assert ("CUDA build" in str(info.value)) == cuda_build()


def test_the_cuda_advice_appears_only_where_a_cuda_build_is_installed(monkeypatch):
    assert engine._cuda_build() == cuda_build()
    for code in (-6, -11):
        assert ("CUDA build" in engine._worker_death(code, None)) == cuda_build()
    monkeypatch.setattr(engine, "_cuda_build", lambda: False)
    assert "pip uninstall" not in engine._worker_death(-11, "0")
    assert "CPU instructions" in engine._worker_death(-4, None)          # SIGILL: a build for another CPU
    assert "messages above" in engine._worker_death(-6, None)
    monkeypatch.setattr(engine, "_cuda_build", lambda: True)
    assert "CUDA build" in engine._worker_death(-11, "0")
    assert engine._worker_death(1, None) == "the llama.cpp worker exited with status 1 (its messages are above)."


def test_the_tokenizer_kind_is_read_from_its_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "byte_fallback": False},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split"},
                                                                {"type": "ByteLevel", "use_regex": False}]},
        "decoder": {"type": "ByteLevel"}}), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}', encoding="utf-8")
    assert export.tokenizer_kind(tmp_path) == ("class PreTrainedTokenizerFast, tokenizer.json model BPE, pre-tokenizer "
                                               "Split+ByteLevel, decoder ByteLevel(GPT-2 regex), no tokenizer.model")
    assert export.converter_said("INFO:hf-to-gguf:Set model tokenizer\nTraceback (most recent call last):\n  File x\n"
                                 "NotImplementedError: BPE pre-tokenizer was not recognized - update it\n") == \
        "NotImplementedError: BPE pre-tokenizer was not recognized - update it"
