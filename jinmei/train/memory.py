"""Recomputation only where the card's memory needs it (`train.gradient_checkpointing: auto`).

A LoRA step costs 4N FLOPs per token (forward, input-gradient backward); every checkpointed decoder layer adds
its forward again, so checkpointing all of them makes it 6N: a third of the matrix work is recomputation. What
checkpointing buys is memory, and how much is needed is known before the first step: the model's shape, the
longest padded batch of this stage (length-grouped batches put it first) and the card's free memory. `plan`
keeps as many layers' activations as fit under a margin and checkpoints the rest; a batch that cannot fit even
fully checkpointed is refused here, naming the params to lower, instead of running out of memory at step one.

The per-token byte counts are what each backend saves for backward in its GPU set-up (bf16 base, the Trainer's
bf16 autocast); frozen base projections keep no input, only the LoRA matrices do:
- plain transformers + peft, per kept layer: both RMSNorms' fp32 inputs (4h each), every LoRA A's input (peft
  casts it to the fp32 adapter's dtype and autocast back to bf16, one copy per target: 2h for q, k, v, o, gate,
  up, 2i for down), every LoRA B's input (2r), SDPA's q/k/v (keys and values repeated to every head when a
  padding mask is given) and output (8h), and the MLP's gate, SiLU and up outputs (6i) = 28h + 8i + 2r x targets.
  tests/train/test_memory.py counts the tensors autograd really saves (bf16 autocast) against it: on the CPU, and on
  CUDA where there is one (to the byte on an H200). A checkpointed layer keeps its input (2h).
- Unsloth's fused kernels save less (norm inputs, one shared QKV input, the O and MLP inputs, q/k/v/out, gate and
  up: 18h + 4i + 2r x targets); its "unsloth" checkpointing offloads a checkpointed layer's input to host memory.
With lora_dropout > 0 each LoRA input also leaves its dropout mask, one byte per element on the GPU (CUDA's
native_dropout keeps it as bool; Unsloth's fused kernels keep the same masks): 6h + i a token for the seven
targets. Left out, the estimate falls short: dropout 0.05 alone, nothing else changed, raised a measured stage1 peak
by a quarter (45.3 to 56.8 GiB: SmolLM2-135M, 64 rows of ~1,600 tokens, no layer recomputed, one H200).
Each kept layer also holds its own bf16 copy of the b x s x s padding mask (SDPA converts the boolean mask at
every call), autocast's bf16 copies of its LoRA weights and, on CUDA, SDPA's philox seed and offset. Plus, whatever is
kept, two layers' worth while one is recomputed or back-propagated (its activations and their gradients), 10h per
token outside the layers (embeddings, final norm), and 20 bytes per LoRA parameter (fp32 weight, gradient, two
Adam moments, one fp32 temporary of foreach AdamW).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from jinmei.errors import JinmeiError

GiB = 2 ** 30
MARGIN_SHARE = 0.10      # of the usable memory: allocator fragmentation, cuBLAS workspaces
MARGIN_BYTES = 2 * GiB   # CUDA graphs / compile caches / NCCL buffers that appear after the plan
LORA_STATE_BYTES = 20    # per trainable parameter
# bytes per token of one kept decoder layer: (per hidden unit, per intermediate unit)
KEPT = {"hf": (28, 8), "unsloth": (18, 4)}
CHECKPOINTED = {"hf": 2, "unsloth": 0}  # per hidden unit: the layer input on the card (Unsloth offloads it)
DROPOUT_MASK_BYTES = 1  # per element of a LoRA input when lora_dropout > 0 (CUDA's bool mask)


@dataclass(frozen=True)
class Shape:
    """What the estimate reads from a decoder-only config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config) -> "Shape":
        text = getattr(config, "text_config", None) or config  # multimodal wrappers keep the decoder inside

        def read(name, default=None):
            """A global value; a per-layer one (Gemma 4: transformers raises on the global read) -> its largest."""
            try:
                return getattr(text, name, default)
            except Exception:  # noqa: BLE001  AmbiguousGlobalPerLayerAttributeError and kin
                layers = getattr(text, "layer_configs", None) or getattr(text, "layers", None) or []
                values = [getattr(c, name, None) for c in layers if getattr(c, name, None) is not None]
                return max(values) if values else default

        heads = int(read("num_attention_heads"))
        hidden = int(read("hidden_size"))
        return cls(layers=int(read("num_hidden_layers")), hidden=hidden,
                   intermediate=int(read("intermediate_size")), heads=heads,
                   kv_heads=int(read("num_key_value_heads") or heads),
                   head_dim=int(read("head_dim") or hidden // heads))


def projection_sizes(shape: Shape, targets: list[str]) -> list[tuple[int, int]]:
    """(in, out) features of each targeted projection of one layer; an unknown name counts as hidden x hidden."""
    h, i, q, kv = shape.hidden, shape.intermediate, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    sizes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
             "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return [sizes.get(t, (h, h)) for t in targets]


def lora_params(shape: Shape, r: int, targets: list[str]) -> int:
    """Trainable parameters of the adapter: r x (in + out) per targeted projection per layer."""
    return shape.layers * sum(r * (n_in + n_out) for n_in, n_out in projection_sizes(shape, targets))


def kept_layer_bytes(shape: Shape, backend: str, r: int, targets: list[str], dropout: float = 0.0) -> int:
    per_h, per_i = KEPT[backend]  # + SDPA's fp32 log-sum-exp per head and both norms' fp32 rsqrt
    masks = DROPOUT_MASK_BYTES * sum(n_in for n_in, _ in projection_sizes(shape, targets)) if dropout else 0
    return per_h * shape.hidden + per_i * shape.intermediate + 2 * r * len(targets) + 4 * shape.heads + 8 + masks


@dataclass(frozen=True)
class Plan:
    setting: Any                 # train.gradient_checkpointing as written: "auto", true or false
    layers: int
    checkpointed: int            # decoder layers recomputed in backward
    kept: list                   # indices of layers that keep their activations (evenly spaced)
    batch_rows: int
    longest_row: int             # tokens; the padded longest batch is batch_rows x longest_row
    usable_gib: float | None     # measured before the adapter exists; None on the CPU
    need_gib: float | None       # estimate for this plan
    reason: str

    def as_metrics(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("kept")
        out["recompute_share"] = round(self.checkpointed / self.layers, 4) if self.layers else 0.0
        return out


def evenly_spaced(count: int, layers: int) -> list[int]:
    """Unsloth's choice for checkpoint_skip_layers=count (same on the plain backend)."""
    return [(k + 1) * layers // count - 1 for k in range(count)] if count else []


def kept_layer_total(shape: Shape, backend: str, r: int, targets: list[str], rows: int, longest: int,
                     dropout: float = 0.0) -> int:
    """Bytes one kept layer holds for a batch: its activations, its own copy of the padding mask (SDPA converts
    the boolean mask at every call and saves it), autocast's bf16 copies of its fp32 LoRA weights, and on CUDA the
    philox seed and offset of SDPA's kernel (two int64s)."""
    tokens = rows * longest
    return (tokens * kept_layer_bytes(shape, backend, r, targets, dropout) + 2 * rows * longest * longest
            + 2 * lora_params(shape, r, targets) // shape.layers + 16)


def need_bytes(shape: Shape, backend: str, r: int, targets: list[str], rows: int, longest: int, kept: int,
               dropout: float = 0.0) -> int:
    tokens = rows * longest
    layer = kept_layer_total(shape, backend, r, targets, rows, longest, dropout)
    checkpointed = tokens * CHECKPOINTED[backend] * shape.hidden
    return ((kept + 2) * layer + (shape.layers - kept) * checkpointed + tokens * 10 * shape.hidden
            + LORA_STATE_BYTES * lora_params(shape, r, targets))


def plan(setting: Any, shape: Shape, backend: str, r: int, targets: list[str], rows: int, longest: int,
         usable: int | None, dropout: float = 0.0) -> Plan:
    """How many layers to checkpoint; `usable` = bytes this process can still allocate (None: no CUDA device)."""
    L = shape.layers
    common = dict(setting=setting, layers=L, batch_rows=rows, longest_row=longest,
                  usable_gib=None if usable is None else round(usable / GiB, 2))

    budget = None if usable is None else usable * (1 - MARGIN_SHARE) - MARGIN_BYTES

    def make(kept: int, reason: str) -> Plan:
        need = None if usable is None else need_bytes(shape, backend, r, targets, rows, longest, kept, dropout)
        if need is not None and need > budget:  # only a forced setting gets here
            reason += f" (estimate above the {budget / GiB:.1f} GiB budget: it may run out of memory)"
        return Plan(checkpointed=L - kept, kept=evenly_spaced(kept, L),
                    need_gib=None if need is None else round(need / GiB, 2), reason=reason, **common)

    if setting is True:
        return make(0, "train.gradient_checkpointing: true")
    if setting is False:
        return make(L, "train.gradient_checkpointing: false")
    if usable is None:
        return make(L, "auto: no CUDA device, so no card memory to save; nothing recomputed")
    fits = [k for k in range(L, -1, -1) if need_bytes(shape, backend, r, targets, rows, longest, k, dropout) <= budget]
    head = f"auto: longest batch {rows} x {longest} tokens, {usable / GiB:.1f} GiB usable, budget {budget / GiB:.1f}"
    if not fits:
        least = need_bytes(shape, backend, r, targets, rows, longest, 0, dropout) / GiB
        raise JinmeiError(
            f"params.yaml: the longest batch ({rows} rows x {longest} tokens) needs about {least:.1f} GiB even "
            f"with every layer checkpointed, and this GPU has {budget / GiB:.1f} GiB to spare after the margin; "
            f"lower train.per_device_batch (keeping train.global_batch: more accumulation), or base.max_seq_length "
            f"with train.too_long: cut_article, or set train.gradient_checkpointing: true to try anyway")
    kept = fits[0]
    if kept == L:
        return make(L, f"{head} GiB: every layer's activations fit, nothing recomputed")
    return make(kept, f"{head} GiB: {kept} of {L} layers keep their activations, {L - kept} recomputed")


def usable_cuda_bytes() -> int | None:
    """Bytes this process can still allocate on its GPU (free + cached-but-unused); None without CUDA.
    Its GPU is the current device, which training.load_base sets to the torchrun rank's."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.cuda.current_device()
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def describe(p: Plan) -> str:
    need = "" if p.need_gib is None else f"; estimate {p.need_gib:.1f} of {p.usable_gib:.1f} GiB usable"
    return f"gradient checkpointing: {p.checkpointed} of {p.layers} layers recomputed ({p.reason}{need})"
