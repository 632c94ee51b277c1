"""The Unsloth backend does what the plain backend does (runs where CUDA and unsloth exist).

On a GPU host: JINMEI_TEST_BASE=<a base model folder> python -m pytest tests/train/test_trainer.py, then
tests/train/test_memory.py in a pytest of its own (unsloth patches Llama process-wide).
"""
import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None,
    reason="needs an NVIDIA GPU and unsloth (pip install -e '.[gpu]')")

ROWS = [
    {"id": "p1", "text": "東京都新宿区の会社員、山田太郎容疑者（45）が逮捕された。",
     "output": {"persons": [{"name": "山田太郎", "act": "逮捕", "address": "東京都新宿区", "signature": None}]}},
    {"id": "e1", "text": "明日の関東地方は晴れ、最高気温は２０度の見込み。", "output": {"persons": []}},
]


@pytest.fixture(scope="module")
def unsloth_model(tiny_base, params):
    import unsloth  # noqa: F401

    from jinmei.train.trainer import LoraSpec, load_model

    lora = LoraSpec(8, 16, 0.0, list(params["lora"]["target_modules"]))
    return load_model(tiny_base, "unsloth", lora, 1024, 0, grad_ckpt=True)


def test_same_examples_and_masks_as_plain_backend(unsloth_model, tiny_base, params):
    from transformers import AutoTokenizer

    from jinmei.train.examples import encode_rows

    _, unsloth_tok = unsloth_model
    plain_tok = AutoTokenizer.from_pretrained(tiny_base)
    args = (params["prompt"]["system"], params["schema"]["fields"], 1024, "skip")
    assert encode_rows(ROWS, unsloth_tok, *args)[0] == encode_rows(ROWS, plain_tok, *args)[0]


def test_fresh_adapter_loss_matches_plain_model(unsloth_model, tiny_base, params):
    """LoRA B starts at zero, so Unsloth's patched forward must give the base model's loss."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from jinmei.train.examples import encode_rows

    model, tok = unsloth_model
    examples, _ = encode_rows(ROWS, tok, params["prompt"]["system"], params["schema"]["fields"], 1024, "skip")
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    batch = {k: v.cuda() for k, v in batch.items()}
    with torch.no_grad():
        unsloth_loss = model(**batch).loss.float().item()
        plain = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16).cuda()
        plain_loss = plain(**batch).loss.float().item()
    assert unsloth_loss == pytest.approx(plain_loss, rel=0.02)


def test_trained_adapter_merges_to_the_same_model(unsloth_model, tiny_base, tmp_path):
    """Our merge stage on an Unsloth adapter == the Unsloth PEFT model's forward (bf16 tolerance)."""
    from transformers import AutoModelForCausalLM

    from jinmei.export import merge
    model, tok = unsloth_model
    gen = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype))
    adapter = tmp_path / "adapter"
    model.save_pretrained(str(adapter))
    merge.merge(tiny_base, adapter, tmp_path / "merged", "bfloat16")
    ids = tok("東京都新宿区の会社員、山田太郎容疑者が逮捕された。", return_tensors="pt")["input_ids"].cuda()
    with torch.no_grad():
        model.eval()
        want = model(input_ids=ids).logits.float()
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.bfloat16).cuda()
        got = merged(input_ids=ids).logits.float()
    # A random model's logits are nearly flat, so compare them as vectors, not by argmax.
    assert (torch.norm(want - got) / torch.norm(want)).item() < 0.02
    assert_merged_weights(tiny_base, adapter, tmp_path / "merged")


def assert_merged_weights(base, adapter, merged):
    """W_merged == W_base + alpha/r * B @ A for every adapted matrix (bf16 rounding allowed)."""
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    base_w = {k: v.float() for k, v in load_file(str(next(base.glob("*.safetensors")))).items()}
    merged_w = {k: v.float() for k, v in load_file(str(next(merged.glob("*.safetensors")))).items()}
    checked = 0
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")].float()
        name = key.split("base_model.model.", 1)[1].replace(".lora_A.weight", ".weight")
        want = base_w[name] + scale * (b @ a.float())
        assert torch.allclose(merged_w[name], want, atol=1e-2, rtol=1e-2), name
        checked += 1
    assert checked > 0
