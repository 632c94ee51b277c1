"""train.gradient_checkpointing: auto — the memory plan, its byte bound, and what the plain backend does with it."""
import sys

import pytest

from jinmei.train import memory
from jinmei.errors import JinmeiError


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# the byte counts are the GPU's; the CPU runs them everywhere, CUDA where there is one (no CI has)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not _has_cuda(), reason="needs CUDA"))]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEVEN_B = memory.Shape(layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4, head_dim=128)
GiB = memory.GiB


def test_lora_params_of_the_7b_shape_match_peft():
    # docs/gpu-benchmark.md: peft reported 161.5 M trainable parameters for r 64 on this shape
    assert memory.lora_params(SEVEN_B, 64, TARGETS) == 161_480_704


@pytest.mark.parametrize("usable_gib, checkpointed", [(140, 0), (24, 14), (9.5, 28)])
def test_auto_recomputes_only_what_does_not_fit(usable_gib, checkpointed):
    p = memory.plan("auto", SEVEN_B, "hf", 64, TARGETS, rows=4, longest=1024, usable=usable_gib * GiB)
    assert p.checkpointed == checkpointed
    assert len(p.kept) == p.layers - p.checkpointed == len(set(p.kept))
    budget = usable_gib * GiB * (1 - memory.MARGIN_SHARE) - memory.MARGIN_BYTES
    assert p.need_gib * GiB <= budget
    if checkpointed:  # one more kept layer would not have fitted
        more = memory.need_bytes(SEVEN_B, "hf", 64, TARGETS, 4, 1024, p.layers - checkpointed + 1)
        assert more > budget


def test_dropout_masks_can_cost_kept_layers():
    kw = dict(rows=8, longest=2048, usable=40 * GiB)
    assert (memory.plan("auto", SEVEN_B, "unsloth", 64, TARGETS, **kw, dropout=0.05).checkpointed
            > memory.plan("auto", SEVEN_B, "unsloth", 64, TARGETS, **kw).checkpointed)


def test_unsloth_offload_leaves_more_layers_kept():
    kw = dict(rows=8, longest=2048, usable=100 * GiB)
    hf = memory.plan("auto", SEVEN_B, "hf", 64, TARGETS, **kw)
    us = memory.plan("auto", SEVEN_B, "unsloth", 64, TARGETS, **kw)
    assert us.checkpointed < hf.checkpointed


def test_a_batch_that_cannot_fit_is_refused_naming_the_params():
    with pytest.raises(JinmeiError) as err:
        memory.plan("auto", SEVEN_B, "hf", 64, TARGETS, rows=64, longest=4096, usable=40 * GiB)
    for knob in ("train.per_device_batch", "base.max_seq_length", "train.gradient_checkpointing: true"):
        assert knob in str(err.value)


def test_forced_settings_are_kept_and_flag_a_risky_estimate():
    forced = memory.plan(False, SEVEN_B, "hf", 64, TARGETS, rows=64, longest=4096, usable=40 * GiB)
    assert forced.checkpointed == 0 and "may run out of memory" in forced.reason
    assert memory.plan(True, SEVEN_B, "hf", 64, TARGETS, rows=1, longest=64, usable=None).checkpointed == 28


def test_without_cuda_auto_recomputes_nothing():
    p = memory.plan("auto", SEVEN_B, "hf", 64, TARGETS, rows=4, longest=4096, usable=None)
    assert (p.checkpointed, p.need_gib, p.kept) == (0, None, list(range(28)))
    assert p.as_metrics()["recompute_share"] == 0.0


def tiny_lora_model(layers: int, ckpt: memory.Plan | None = None, dropout: float = 0.0, device: str = "cpu"):
    torch = pytest.importorskip("torch")
    if "unsloth" in sys.modules:  # it patched transformers' Llama for the whole process (tests/train/test_trainer.py)
        pytest.skip("unsloth is imported in this process: run tests/train/test_memory.py in a pytest of its own")
    from transformers import LlamaConfig, LlamaForCausalLM

    from jinmei.train.trainer import LoraSpec, add_lora

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=352, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).to(device=device, dtype=torch.bfloat16)
    shape = memory.Shape.of(config)
    plan = ckpt or memory.plan(False, shape, "hf", 8, TARGETS, 1, 1, None)
    return add_lora(model, "hf", LoraSpec(8, 16, dropout, TARGETS), 0, plan), shape


def saved_activation_bytes(model, ids, mask) -> int:
    """Bytes of the distinct non-parameter tensors autograd keeps for backward over one forward."""
    import torch

    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()  # bf16 autocast, as the Trainer runs a bf16 model on the GPU (fp32 LoRA adapters, peft's default)
    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast(ids.device.type, dtype=torch.bfloat16)):
        model(input_ids=ids, attention_mask=mask, labels=ids)
    return sum(seen.values())


def saved_per_layer(dropout: float = 0.0, device: str = "cpu") -> tuple[float, memory.Shape]:
    """What one more kept decoder layer adds to autograd's saved tensors (a padded batch of 2 x 96 tokens)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ids = torch.randint(1, 500, (2, 96), device=device)
    mask = torch.ones_like(ids)
    mask[1, 70:] = 0  # a padded row, as in every length-grouped batch
    measured = {}
    for layers in (2, 4):
        model, shape = tiny_lora_model(layers, dropout=dropout, device=device)
        measured[layers] = saved_activation_bytes(model, ids, mask)
    return (measured[4] - measured[2]) / 2, shape


@pytest.mark.parametrize("device", DEVICES)
def test_the_plain_backend_saves_no_more_than_the_bound(device):
    """Per kept layer and token, what autograd really keeps (bf16, SDPA with a padding mask) is the estimate's."""
    per_layer, shape = saved_per_layer(device=device)
    bound = memory.kept_layer_total(shape, "hf", 8, TARGETS, rows=2, longest=96)
    assert 0.95 * bound <= per_layer <= bound, (per_layer, bound)


@pytest.mark.parametrize("device", DEVICES)
def test_lora_dropout_adds_one_mask_per_lora_input(device):
    """lora_dropout > 0 keeps a mask of every LoRA input and nothing else: on CUDA native_dropout's bool
    (DROPOUT_MASK_BYTES, what the plan counts), on the CPU dropout's fp32 noise (4 bytes an element)."""
    without, shape = saved_per_layer(0.0, device)
    with_dropout, _ = saved_per_layer(0.05, device)
    planned = (memory.kept_layer_bytes(shape, "hf", 8, TARGETS, dropout=0.05)
               - memory.kept_layer_bytes(shape, "hf", 8, TARGETS)) / memory.DROPOUT_MASK_BYTES
    assert planned == 6 * shape.hidden + shape.intermediate
    per_element = {"cuda": memory.DROPOUT_MASK_BYTES, "cpu": 4}[device]
    assert (with_dropout - without) / (2 * 96) == per_element * planned


def test_partial_checkpointing_gives_the_same_gradients():
    """Recomputing some layers changes memory, not the numbers: LoRA gradients equal the unrecomputed run's."""
    torch = pytest.importorskip("torch")
    ids = torch.randint(1, 500, (2, 48))
    mask = torch.ones_like(ids)
    mask[0, 40:] = 0
    grads = []
    for checkpointed in (0, 2):
        model, shape = tiny_lora_model(4)
        if checkpointed:
            kept = memory.evenly_spaced(4 - checkpointed, 4)
            plan = memory.Plan("auto", 4, checkpointed, kept, 2, 48, None, None, "test")
            model, _ = tiny_lora_model(4, plan)
            from jinmei.train.trainer import decoder_layers

            assert [layer.gradient_checkpointing for layer in decoder_layers(model)] == \
                [i not in kept for i in range(4)]
        model.train()
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0, msg=name)
