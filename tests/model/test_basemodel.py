"""The base stage: a plain HF folder whose tokenizer tokenizes exactly like llama.cpp."""
from __future__ import annotations

import json
from pathlib import Path

import llama_cpp
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from jinmei.model import basemodel as base
from stages import base as base_stage
from jinmei.errors import JinmeiError
from jinmei.export.gguf import convert_to_f16, llama_log

# Japanese (kanji, kana, half/full width), ASCII, digits, whitespace runs, emoji, special tokens.
TEXTS = [
    "東京都港区の会社員、山田太郎さん(45)が24日、詐欺の疑いで警視庁に逮捕された。",
    "ｶﾀｶﾅとカタカナ、ＡＢＣ１２３と ABC123。「括弧」『二重』…！？",
    "Hello, world! It's a test: don't split 'these' wrongly.",
    "1234567890 3.14159 2026-11-24 10,000円 ０１２",
    "  leading spaces\n\n\ttabs and  double  spaces \r\n trailing ",
    "mixed 日本語 and English 123abc 🙂 é ß ü",
    "<|im_start|>user\n山田<|im_end|>\n<|endoftext|>",
    '{"persons":[{"name":"山田太郎","act":null,"address":"東京都","signature":null}]}',
    "",
]


def shared_dir(tmp_path_factory, name: str) -> Path:
    """One folder per pytest session, shared between test modules (built once)."""
    return tmp_path_factory.getbasetemp() / name


@pytest.fixture(scope="session")
def bundled_base(tmp_path_factory) -> Path:
    out = shared_dir(tmp_path_factory, "bundled-base")
    if not (out / "config.json").exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # on 2 shared cores, 2 torch threads ran 3x slower than 1
        try:
            base.materialise("bundled:smollm2-135m-instruct", out, save_dtype="bfloat16")
        finally:
            torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def roundtrip_vocab_gguf(bundled_base, tmp_path_factory) -> Path:
    """The materialised folder converted back to GGUF by llama.cpp's converter (vocabulary only)."""
    out = tmp_path_factory.mktemp("roundtrip") / "vocab.gguf"
    convert_to_f16(bundled_base, out, "roundtrip", vocab_only=True)
    return out


def llama_ids(gguf_path: Path, texts: list[str], special: bool) -> list[list[int]]:
    with llama_log():
        vocab = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        try:
            return [vocab.tokenize(t.encode("utf-8"), add_bos=False, special=special) for t in texts]
        finally:
            vocab.close()


def hf_ids(tokenizer, texts: list[str], special: bool) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False, split_special_tokens=not special)["input_ids"] for t in texts]


def test_folder_is_plain_hf_model(bundled_base):
    names = {p.name for p in bundled_base.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not [n for n in names if n.startswith(".")], "temporary files left behind"
    config = json.loads((bundled_base / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    generation = json.loads((bundled_base / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 0)
    model = AutoModelForCausalLM.from_pretrained(bundled_base)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000


def test_tokenizer_is_smollm2_byte_level_bpe(bundled_base):
    spec = json.loads((bundled_base / "tokenizer.json").read_text(encoding="utf-8"))
    assert spec["model"]["type"] == "BPE" and spec["model"]["byte_fallback"] is False
    assert spec["normalizer"] is None
    assert spec["decoder"]["type"] == "ByteLevel"
    pre = spec["pre_tokenizer"]
    assert pre["type"] == "Sequence"
    assert pre["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert pre["pretokenizers"][1]["type"] == "ByteLevel"
    assert pre["pretokenizers"][1]["add_prefix_space"] is False
    tokenizer = AutoTokenizer.from_pretrained(bundled_base)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)
    assert tokenizer("テスト")["input_ids"] == tokenizer("テスト", add_special_tokens=False)["input_ids"], "adds BOS"
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_is_smollm2_chatml(bundled_base):
    config = json.loads((bundled_base / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == base.SMOLLM2_CHAT_TEMPLATE
    assert config["add_bos_token"] is False
    tokenizer = AutoTokenizer.from_pretrained(bundled_base)
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "記事"},
                    {"role": "assistant", "content": "{}"}, {"role": "user", "content": "次"}]
    assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n記事<|im_end|>\n"
        "<|im_start|>assistant\n{}<|im_end|>\n<|im_start|>user\n次<|im_end|>\n<|im_start|>assistant\n")
    no_system = tokenizer.apply_chat_template(conversation[1:2], tokenize=False)
    assert no_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_chat_template_matches_the_bundled_gguf():
    from gguf import GGUFReader

    reader = GGUFReader(base.bundled_gguf_path())
    assert reader.fields["tokenizer.chat_template"].contents() == base.SMOLLM2_CHAT_TEMPLATE


@pytest.mark.parametrize("special", [True, False], ids=["special", "plain"])
def test_token_ids_match_llama_cpp_on_bundled_gguf(bundled_base, special):
    tokenizer = AutoTokenizer.from_pretrained(bundled_base)
    assert hf_ids(tokenizer, TEXTS, special) == llama_ids(base.bundled_gguf_path(), TEXTS, special)


@pytest.mark.parametrize("special", [True, False], ids=["special", "plain"])
def test_token_ids_match_llama_cpp_on_gguf_converted_back(bundled_base, roundtrip_vocab_gguf, special):
    from gguf import GGUFReader

    fields = GGUFReader(roundtrip_vocab_gguf).fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    tokenizer = AutoTokenizer.from_pretrained(bundled_base)
    assert hf_ids(tokenizer, TEXTS, special) == llama_ids(roundtrip_vocab_gguf, TEXTS, special)


def test_special_tokens_are_single_ids(bundled_base):
    tokenizer = AutoTokenizer.from_pretrained(bundled_base)
    for token, token_id in [("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)]:
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]
        assert llama_ids(base.bundled_gguf_path(), [token], special=True) == [[token_id]]


def test_tiny_random_base(tmp_path):
    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128}
    out = base.make_tiny_base(tmp_path / "tiny", seed=3, sizes=sizes)
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in sizes} == sizes
    assert config["vocab_size"] == 49152 and config["tie_word_embeddings"] is True
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == base.SMOLLM2_CHAT_TEMPLATE and tokenizer.eos_token_id == 2
    again = base.make_tiny_base(tmp_path / "again", seed=3, sizes=sizes)
    assert (out / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert (out / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_local_hf_folder_is_copied_in_save_dtype(tmp_path):
    source = base.make_tiny_base(tmp_path / "source", seed=5, dtype="float32")
    out = tmp_path / "base"
    base.materialise(str(source), out, save_dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(source).get_vocab()
    original = AutoModelForCausalLM.from_pretrained(source).model.embed_tokens.weight
    copied = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).model.embed_tokens.weight
    assert torch.equal(original.to(torch.bfloat16).float(), copied)


def run_stage(tmp_path, monkeypatch, base_section: dict, out: Path) -> None:
    params = tmp_path / "params.yaml"
    committed = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text(encoding="utf-8"))
    committed["base"] = {**committed["base"], "tiny": {}, **base_section}  # every stage validates the whole file
    committed["lora"]["r"] = 8  # preflight refuses a rank above the tiny models' hidden size
    params.write_text(yaml.safe_dump(committed), encoding="utf-8")
    monkeypatch.setenv("JINMEI_PARAMS", str(params))
    base_stage.main(["--out", str(out)])


def test_cli_writes_tiny_base_from_params(tmp_path, monkeypatch):
    out = tmp_path / "models" / "base"
    run_stage(tmp_path, monkeypatch, {"model": "tiny-random", "save_dtype": "float32",
                                      "tiny": {"hidden_size": 32, "num_attention_heads": 2,
                                               "num_key_value_heads": 1, "intermediate_size": 64}}, out)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["dtype"]) == (32, 2, "float32")
    assert sorted(p.name for p in out.parent.iterdir()) == ["base"], "temporary folder left behind"


@pytest.mark.parametrize("section, message", [
    ({"model": "bundled:nope"}, "unknown bundled model"),
    ({"model": "tiny-random", "save_dtype": "int3"}, "save_dtype"),
    ({"model": "tiny-random", "tiny": {"hidden": 8}}, "base.tiny.*unknown"),
    ({"model": "./no/such/folder"}, "not found"),
    ({"model": ""}, "base.model=.*non-empty"),
])
def test_bad_params_give_one_clear_error(tmp_path, monkeypatch, section, message):
    out = tmp_path / "out"
    with pytest.raises(JinmeiError, match=message):
        run_stage(tmp_path, monkeypatch, section, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_uncached_hub_id_offline_says_how_to_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(JinmeiError, match="nor in the HF cache.*JINMEI_ALLOW_HUB=1"):
        base.materialise("jinmei-test/no-such-model", tmp_path / "out", revision="0" * 40)
    assert not (tmp_path / "out").exists()


def test_a_hub_id_without_a_revision_is_refused_before_any_download(tmp_path, monkeypatch):
    """dvc.lock sees params.yaml: a hub id at no fixed commit could change under the same name unnoticed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (lambda: base.load_tokenizer("Qwen/Qwen2.5-7B-Instruct"),
                 lambda: base.materialise("Qwen/Qwen2.5-7B-Instruct", tmp_path / "out")):
        with pytest.raises(JinmeiError, match="hub id without base.revision.*model_info.*hf download"):
            load()
    assert not (tmp_path / "out").exists()


def test_a_revision_for_a_folder_or_the_bundled_model_is_refused(tmp_path):
    for spec in ("bundled:smollm2-135m-instruct", str(tmp_path)):
        with pytest.raises(JinmeiError, match="is not a hub id.*base.revision: null"):
            base.load_tokenizer(spec, revision="0123abcd")
    assert base.hub_revision("org/model", "0123abcd") == "0123abcd"
