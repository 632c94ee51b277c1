"""Training throughput of the recipe's LoRA on one GPU: Unsloth vs plain transformers+peft+trl.

Why: the recipe claims Unsloth is the fast path and that length-grouped batches keep padding low; this
measures both on the same model, the same batches and the same card, and says how far the card is used.

No weights or tokenizer can be downloaded on an offline GPU host, so the model is a real architecture's
config (Qwen2.5-1.5B or Qwen2.5-7B shape) with random bf16 weights saved once to a folder that both
backends load (throughput does not depend on weight values), and the data are synthetic token-id rows
whose lengths follow Japanese news articles (see `synth_lengths` and docs/gpu-benchmark.md).

Its step clock synchronises the GPU at every step end, which hides any overlap of host and GPU work; where the
host's share of a step matters, step_host.py times a window with one synchronisation and says where host time goes.

Subcommands (each backend runs in its own process: `import unsloth` patches transformers globally):
  build    write the random-weight model folder for a shape
  bench    one backend, a per-device batch sweep; writes JSON after every batch size
  pads     padding share of random vs length-grouped batches (CPU only, no model)
  summary  side-by-side table of several bench JSONs, goals checked
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1]))  # a jinmei on PYTHONPATH (an older checkout) wins
from jinmei.errors import JinmeiError, run_main  # noqa: E402
from jinmei.files import write_json  # noqa: E402
from jinmei.config.params import as_dict, load_all  # noqa: E402
from jinmei.runtime import set_offline_env  # noqa: E402
from jinmei.train import memory  # noqa: E402
from jinmei.train import trainer as stages  # noqa: E402
from jinmei.train.trainer import LoraSpec, add_lora, checkpoint_plan, load_base, sft_config  # noqa: E402

# Real architectures' shapes (Qwen2.5 config.json values); "tiny" is for CPU smoke tests only.
SHAPES = {
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    # the bundled base model's own shape (Llama architecture): sizes the at-scale run (profiles/at-scale.yaml)
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=2048, tie_word_embeddings=True),
}
FIRST_SPECIAL_ID = 151643  # Qwen2.5's <|endoftext|>; synthetic ids stay below it (and below the vocab)


def special_base(vocab: int) -> int:
    """Id of the first of the three ChatML specials (end of text, turn start, turn end): Qwen2.5's ids, or the
    vocab's last three."""
    return min(vocab, FIRST_SPECIAL_ID + 3) - 3
SPEC_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core spec (SXM); H200 has the same compute


# ---------------------------------------------------------------- data: lengths, batches, padding
def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("synthetic data (lengths of Japanese news articles, tokenizer-free)")
    g.add_argument("--rows", type=int, default=4000, help="rows in the synthetic epoch")
    g.add_argument("--chars-median", type=float, default=800.0, help="article length, lognormal median (chars)")
    g.add_argument("--chars-sigma", type=float, default=0.45, help="lognormal sigma of article length")
    g.add_argument("--chars-min", type=int, default=100)
    g.add_argument("--chars-max", type=int, default=2000, help="longer draws are redrawn, not clipped")
    g.add_argument("--tokens-per-char", type=float, default=1.9, help="measured for Japanese (NOTES.md)")
    g.add_argument("--prompt-overhead", type=int, default=90,
                   help="tokens of system prompt + chat template around the article")
    g.add_argument("--positive-share", type=float, default=0.10, help="share of rows with persons")
    g.add_argument("--empty-answer-tokens", type=int, default=10, help='{"persons":[]} + end-of-turn tokens')
    g.add_argument("--positive-answer-tokens", default="40,150", help="uniform range for answers with persons")
    g.add_argument("--mega-batch-mult", type=int, default=50, help="length grouping: sort within mult x batch rows")
    g.add_argument("--seed", type=int, default=20261124)


def synth_lengths(args) -> tuple[np.ndarray, np.ndarray]:
    """(prompt_tokens, answer_tokens) per row: lognormal article chars x tokens/char, 90% empty answers."""
    rng = np.random.default_rng(args.seed)
    chars = rng.lognormal(math.log(args.chars_median), args.chars_sigma, size=args.rows)
    bad = (chars < args.chars_min) | (chars > args.chars_max)
    while bad.any():  # redraw out-of-range lengths so no spike forms at the bounds
        chars[bad] = rng.lognormal(math.log(args.chars_median), args.chars_sigma, size=int(bad.sum()))
        bad = (chars < args.chars_min) | (chars > args.chars_max)
    prompt = np.rint(chars * args.tokens_per_char).astype(np.int64) + args.prompt_overhead
    lo, hi = (int(x) for x in args.positive_answer_tokens.split(","))
    positive = rng.random(args.rows) < args.positive_share
    answer = np.where(positive, rng.integers(lo, hi + 1, size=args.rows), args.empty_answer_tokens)
    return prompt, answer.astype(np.int64)


def epoch_batches(lengths: np.ndarray, batch: int, order: str, args) -> list[list[int]]:
    """One epoch's batches: a random permutation, or HF's length grouping (the sampler Trainer uses)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    gen = torch.Generator().manual_seed(args.seed + batch)
    if order == "random":
        idx = torch.randperm(len(lengths), generator=gen).tolist()
    elif order == "grouped":
        idx = get_length_grouped_indices(lengths.tolist(), batch, mega_batch_mult=args.mega_batch_mult, generator=gen)
    else:
        raise JinmeiError(f"--order {order}: use random or grouped")
    return [idx[i:i + batch] for i in range(0, len(idx) - batch + 1, batch)]  # drop a ragged tail


def pad_share(lengths: np.ndarray, batches: list[list[int]]) -> dict:
    """Pad tokens / all tokens of the right-padded batches (each padded to its longest row)."""
    real = np.array([lengths[b].sum() for b in batches], dtype=np.float64)
    padded = np.array([len(b) * lengths[b].max() for b in batches], dtype=np.float64)
    per_step = 1.0 - real / padded
    return {"pad_share": float(1.0 - real.sum() / padded.sum()), "pad_share_step_mean": float(per_step.mean()),
            "pad_share_step_p90": float(np.percentile(per_step, 90)), "steps": len(batches)}


def data_summary(prompt: np.ndarray, answer: np.ndarray, args) -> dict:
    total = prompt + answer
    q = lambda a: {k: int(np.percentile(a, p)) for k, p in (("p10", 10), ("p50", 50), ("p90", 90))}  # noqa: E731
    return {"distribution": {k: getattr(args, k) for k in (
                "rows", "chars_median", "chars_sigma", "chars_min", "chars_max", "tokens_per_char",
                "prompt_overhead", "positive_share", "empty_answer_tokens", "positive_answer_tokens",
                "mega_batch_mult", "seed")},
            "row_tokens": {"mean": float(total.mean()), "max": int(total.max()), **q(total)},
            "answer_tokens_mean": float(answer.mean()),
            "supervised_share": float(answer.sum() / total.sum())}


def pads_table(prompt, answer, batch_sizes, args) -> list[dict]:
    lengths = prompt + answer
    return [{"batch": b, "random": pad_share(lengths, epoch_batches(lengths, b, "random", args)),
             "grouped": pad_share(lengths, epoch_batches(lengths, b, "grouped", args))} for b in batch_sizes]


def plan_steps(lengths: np.ndarray, batch: int, order: str, warmup: int, steps: int, args) -> list[list[int]]:
    """The batches one sweep point trains on: the epoch's longest batch first (proves the batch size fits,
    as HF's sampler does), then warm-up and timed batches drawn at random from the same epoch."""
    batches = epoch_batches(lengths, batch, order, args)
    longest = max(range(len(batches)), key=lambda i: lengths[batches[i]].max())
    rest = [i for i in range(len(batches)) if i != longest]
    rng = np.random.default_rng(args.seed + 7 * batch)
    picked = rng.choice(rest, size=min(len(rest), warmup - 1 + steps), replace=False).tolist()
    return [batches[longest]] + [batches[i] for i in picked]


def token_row(i: int, prompt_len: int, answer_len: int, vocab: int, seed: int) -> tuple[list[int], list[int]]:
    """Row i's random token ids (no tokenizer; fixed per row) and labels with the prompt masked (-100)."""
    row = np.random.default_rng([seed, i]).integers(1, special_base(vocab), size=prompt_len + answer_len).tolist()
    return row, [-100] * prompt_len + row[prompt_len:]


# ---------------------------------------------------------------- model folder
def model_config(shape: str):
    from transformers import LlamaConfig, Qwen2Config

    base = special_base(SHAPES[shape]["vocab_size"])
    if shape == "smollm2-135m":
        return LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, rope_theta=100_000.0, rms_norm_eps=1e-5,
                           hidden_act="silu", bos_token_id=base + 1, eos_token_id=base + 2, torch_dtype="bfloat16")
    return Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                       hidden_act="silu", use_sliding_window=False, bos_token_id=base, eos_token_id=base + 2,
                       torch_dtype="bfloat16")


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A word-level tokenizer whose special tokens carry Qwen2.5's ids; the benchmark never tokenizes text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from jinmei.model.basemodel import SMOLLM2_CHAT_TEMPLATE, SMOLLM2_SPECIAL  # the bundled model's ChatML

    specials = [SMOLLM2_SPECIAL["pad_token"], SMOLLM2_SPECIAL["bos_token"], SMOLLM2_SPECIAL["eos_token"]]
    base = special_base(vocab)
    words = {f"t{i}": i for i in range(min(base, 1000))}
    words.update({s: base + k for k, s in enumerate(specials)})
    tok = Tokenizer(models.WordLevel(words, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[2], pad_token=specials[0],
                                   unk_token="t0", model_max_length=32768)
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    fast.save_pretrained(folder)


def build(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(args.dir)
    if (folder / "config.json").exists():
        print(f"model folder {folder} exists; kept")
        return
    torch.manual_seed(args.seed)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(model_config(args.shape), dtype=torch.bfloat16)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, max_shard_size="4GB")
    write_tokenizer(tmp, model.config.vocab_size)
    os.replace(tmp, folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"built {args.shape}: {n / 1e9:.3f}B params, random bf16 weights, {time.perf_counter() - t0:.0f} s -> {folder}")


# ---------------------------------------------------------------- the stages' own model and trainer set-up
# What differs from a stage's run, on purpose, and printed with every result: fixed steps on planned batches.
BENCH_OVERRIDES = {"lr_scheduler_type": "constant", "warmup_steps": 0, "train_sampling_strategy": "sequential",
                   "logging_steps": 10_000}


def stages_answer_head(backend: str, params) -> str | None:
    """The loss the stages would run on answer tokens only (None where they would not, or predate it)."""
    return stages.answer_head(backend, params.train) if hasattr(stages, "answer_head") else None


def stages_trainer(model, tok, cfg, ds, callbacks=(), answer_head_loss=None):
    """The trainer the stages build (make_trainer); in an older checkout without it, the plain SFTTrainer it built."""
    if hasattr(stages, "answer_head"):
        return stages.make_trainer(model, tok, cfg, ds, list(callbacks), answer_head_loss)
    if hasattr(stages, "make_trainer"):
        return stages.make_trainer(model, tok, cfg, ds, list(callbacks))
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    return trainer


def checkpointing_setting(choice: str, params):
    """--checkpointing as train.gradient_checkpointing's value; "params" = the params file's own."""
    return {"true": True, "false": False, "auto": "auto"}.get(choice, params.train.gradient_checkpointing)


def load_backend(backend: str, folder: str, params, max_len: int, seed: int, setting, batches: list[int],
                 longest: int):
    """The stages' load_base -> checkpoint_plan -> add_lora (jinmei.train.trainer), for the sweep's longest batch.

    One process holds one plan: batch sizes whose plans differ (auto) must run in separate processes."""
    lora = params.lora
    spec = LoraSpec(int(lora.r), int(lora.alpha), float(lora.dropout), list(lora.target_modules))
    model, tok = load_base(Path(folder), backend, max_len)
    import torch

    allocated = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    plans = {b: checkpoint_plan(setting, model, backend, spec, b, longest) for b in batches}
    kinds = {b: (p.checkpointed, tuple(p.kept)) for b, p in plans.items()}
    if len(set(kinds.values())) > 1:
        raise JinmeiError(f"--checkpointing {setting}: the batches plan differently "
                          f"({', '.join(f'b{b}: {p.checkpointed} recomputed' for b, p in plans.items())}); "
                          "run each plan's batches in its own process")
    plan = plans[max(batches)]
    print(f"[{backend}] {memory.describe(plan)}")
    return add_lora(model, backend, spec, seed, plan), tok, plans, allocated


def body_matmul_params(model) -> tuple[int, int]:
    """(N_body, N_head): base weights of the decoder's Linear layers (no embeddings, no LoRA), and lm_head's."""
    import torch

    body = head = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or "lora_" in name:
            continue
        if name.endswith("lm_head"):
            head += mod.weight.numel()
        elif "layers." in name:
            body += mod.weight.numel()
    return body, head


def matmul_tflops(device: str, n: int = 8192, reps: int = 30) -> float | None:
    """The card's achievable bf16 rate here and now: median of an n^3 matmul on random data, after ~0.3 s of the
    same work so that the clocks have settled."""
    import torch

    if device == "cpu":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(200):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n ** 3 / statistics.median(times) / 1e12


def against_higher_rate(result: dict, rows: list[dict], keys: tuple[str, ...], end_rate: float) -> float:
    """The bf16 probe reads a few % apart within one process and from one process to the next (clocks, heat); an MFU
    divided by the lower read flatters the run. Every MFU under `keys` in `rows` is rescaled to the higher of the
    start and end reads; `<key>_start_rate` keeps the figure against the start read."""
    start = result["matmul_bf16_tflops_measured"]
    rate = max(start, end_rate)
    result.update({"matmul_bf16_tflops_measured_end": end_rate, "mfu_rate_tflops": rate})
    for row in rows:
        for key in keys:
            if row.get(key) is not None:
                row[f"{key}_start_rate"], row[key] = row[key], row[key] * start / rate
    return rate


class StepClock:
    """Trainer callback: wall time at the end of every optimizer step (device synchronised)."""

    def __init__(self, sync):
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, *a, **k):
                sync()
                clock.marks = [time.perf_counter()]

            def on_step_end(self, *a, **k):
                sync()
                clock.marks.append(time.perf_counter())

        self.callback, self.marks = _CB(), []

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


class CollatorProbe:
    """Wraps the trainer's collator; records the shape of every batch it builds (what the model really sees)."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, examples):
        out = self.inner(examples)
        mask = out.get("attention_mask")
        ids = out["input_ids"]
        real = int(mask.sum()) if mask is not None else int(ids.numel())
        self.seen.append({"rows": int(ids.shape[0]), "width": int(ids.shape[1]), "nonpad": real,
                          "supervised": int((out["labels"] != -100).sum())})
        return out


def train_steps(backend, model, tok, ids, labels, batch, n_steps, params, device, seed):
    """Train n_steps on rows in the given order (sequential sampler); returns (durations, collated batches)."""
    import torch
    from datasets import Dataset
    on_gpu = device != "cpu"
    cfg = sft_config(params.train, seed, backend, 1, output_dir=f"/tmp/jinmei-bench-run-{backend}", lr=params.stage1.lr,
                     steps=n_steps, per_device=batch, accum=1, save=False, **BENCH_OVERRIDES)
    ds = Dataset.from_dict({"input_ids": ids, "labels": labels, "length": [len(x) for x in ids]})
    trainer = stages_trainer(model, tok, cfg, ds, (), stages_answer_head(backend, params))
    probe = CollatorProbe(trainer.data_collator)
    trainer.data_collator = probe
    clock = StepClock(torch.cuda.synchronize if on_gpu else (lambda: None))
    trainer.add_callback(clock.callback)
    try:
        trainer.train()
    finally:
        del trainer
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
    return clock.durations(), probe.seen


def match_probe(seen: list[dict], planned: list[dict]) -> list[dict] | None:
    """The collated batches that correspond to the planned ones (a collator may also be called for checks)."""
    key = [(p["rows"], p["nonpad"]) for p in planned]
    for start in range(len(seen) - len(planned), -1, -1):
        if [(s["rows"], s["nonpad"]) for s in seen[start:start + len(planned)]] == key:
            return seen[start:start + len(planned)]
    return None


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def bench(args) -> None:
    set_offline_env()
    t_start = time.perf_counter()
    params = load_all(args.params)
    lora = as_dict(params.lora)
    print(f"[{args.backend}] the stages' load_base, checkpoint_plan, add_lora and sft_config from {args.params}; "
          f"overrides {BENCH_OVERRIDES}, "
          "per-device batch swept, no accumulation")
    if args.backend == "unsloth":
        import unsloth  # noqa: F401  (patches transformers/peft/trl; must be first)
    import torch
    import transformers
    import peft
    import trl

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and args.backend == "unsloth":
        raise JinmeiError("--backend unsloth needs a CUDA GPU; use --backend hf on the CPU")
    gpu = torch.cuda.get_device_name(0) if device != "cpu" else platform.processor() or "cpu"
    spec = args.spec_tflops or next((v for k, v in SPEC_TFLOPS.items() if k in gpu), None)
    measured = matmul_tflops(device)
    print(f"[{args.backend}] {gpu}: bf16 8192^3 matmul {measured and round(measured)} TFLOP/s (spec {spec})")

    prompt, answer = synth_lengths(args)
    lengths = prompt + answer
    if lengths.max() > args.max_seq_length:
        raise JinmeiError(f"synthetic rows reach {lengths.max()} tokens > --max-seq-length {args.max_seq_length}: "
                          "lower --chars-max or raise --max-seq-length (rows are never truncated)")
    t0 = time.perf_counter()
    setting = checkpointing_setting(args.checkpointing, params)
    model, tok, plans, allocated = load_backend(args.backend, args.dir, params, args.max_seq_length, args.seed,
                                                setting, list(args.batches) + list(args.random_batches),
                                                int(lengths.max()))
    load_s = time.perf_counter() - t0
    n_body, n_head = body_matmul_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vocab = model.get_input_embeddings().weight.shape[0]
    attn = getattr(model.config, "_attn_implementation", None)
    print(f"[{args.backend}] loaded in {load_s:.0f} s; N_body {n_body / 1e9:.3f}B, lm_head {n_head / 1e6:.0f}M, "
          f"LoRA trainable {trainable / 1e6:.1f}M, attention {attn}")

    result = {
        "backend": args.backend, "shape": args.shape, "device": gpu, "model_dir": args.dir,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "trl": trl.__version__, "unsloth": _version("unsloth"), "python": platform.python_version()},
        "lora": lora, "max_seq_length": args.max_seq_length, "attn_implementation": attn,
        "params": str(args.params), "overrides": BENCH_OVERRIDES,
        "checkpointing": setting, "plans": {str(b): p.as_metrics() for b, p in plans.items()},
        "allocated_before_adapter_gib": allocated / 2**30,
        "gradient_checkpointing": ("unsloth (offloaded)" if args.backend == "unsloth" else "transformers (recompute)"),
        "n_body_params": n_body, "n_lm_head_params": n_head, "trainable_params": trainable,
        "flops_formula": "strict: 4 * N_body * non-pad tokens; with recomputation: (4 + 2 * recomputed share of "
                         "layers) * N_body * tokens (N_body = decoder Linear weights, no embeddings, no lm_head)",
        "matmul_bf16_tflops_measured": measured, "bf16_tflops_spec": spec,
        "data": data_summary(prompt, answer, args), "load_s": load_s, "warmup": None, "runs": [],
    }
    out = Path(args.out)
    write_json(out, result)

    def rows_of(batches):
        rows = [token_row(i, int(prompt[i]), int(answer[i]), vocab, args.seed) for b in batches for i in b]
        return [r[0] for r in rows], [r[1] for r in rows]

    def planned_stats(batches):
        return [{"rows": len(b), "nonpad": int(lengths[b].sum()), "width": int(lengths[b].max()),
                 "supervised": int(answer[b].sum())} for b in batches]

    # Compile / autotune warm-up (Unsloth compiles every decoder block on its first step): 3 steps of mixed length.
    warm = epoch_batches(lengths, 1, "random", args)[:3]
    t0 = time.perf_counter()
    durations, _ = train_steps(args.backend, model, tok, *rows_of(warm), 1, len(warm), params, device, args.seed)
    result["warmup"] = {"steps_s": durations, "total_s": time.perf_counter() - t0}
    print(f"[{args.backend}] warm-up steps: {', '.join(f'{d:.1f}' for d in durations)} s")
    write_json(out, result)

    sweep = [(b, "grouped") for b in args.batches] + [(b, "random") for b in args.random_batches]
    stop_grouped = False
    for batch, order in sweep:
        if order == "grouped" and stop_grouped:
            continue
        elapsed = time.perf_counter() - t_start
        prior = [r for r in result["runs"] if r["status"] == "ok"]
        if prior:  # predicted time of this point: the last one's steady steps scaled by rows per step, plus
            last = prior[-1]  # a first step as long as the last one's (compile or longest batch)
            steady = last["wall_s"] - last["step_s"][0]
            guess = (steady * (args.warmup + args.steps) / len(last["step_s"]) + last["step_s"][0]) * batch / last["batch"]
            if elapsed + guess > args.time_budget:
                result["runs"].append({"batch": batch, "order": order, "status": "skipped: time budget",
                                       "predicted_s": guess})
                print(f"[{args.backend}] batch {batch} {order}: skipped, ~{guess:.0f} s left no room in budget")
                continue
        batches = plan_steps(lengths, batch, order, args.warmup, args.steps, args)
        planned = planned_stats(batches)
        if device != "cpu":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        status = None
        try:
            durations, seen = train_steps(args.backend, model, tok, *rows_of(batches), batch, len(batches),
                                          params, device, args.seed)
        except Exception as exc:  # noqa: BLE001  an OOM ends the sweep for this order; anything else is recorded
            status = "oom" if is_oom(exc) else f"error: {type(exc).__name__}: {str(exc)[:400]}"
        if status:  # outside the except block, so the traceback (and the tensors it holds) is already gone
            model.zero_grad(set_to_none=True)
            gc.collect()
            if device != "cpu":
                torch.cuda.empty_cache()
            result["runs"].append({"batch": batch, "order": order, "status": status,
                                   "longest_row": int(lengths[batches[0]].max())})
            write_json(out, result)
            print(f"[{args.backend}] batch {batch} {order}: {status}")
            if order == "grouped":
                stop_grouped = True
            continue
        wall = time.perf_counter() - t0
        collated = match_probe(seen, planned)
        stats = collated or planned
        timed = list(range(args.warmup, len(durations)))
        tokens = sum(stats[i]["nonpad"] for i in timed)
        padded = sum(stats[i]["rows"] * stats[i]["width"] for i in timed)
        secs = sum(durations[i] for i in timed)
        tok_s = tokens / secs
        step_rates = [stats[i]["nonpad"] / durations[i] for i in timed]
        share = plans[batch].checkpointed / plans[batch].layers
        model_tflops = 4 * n_body * tok_s / 1e12  # strict model FLOPs: forward 2N + input-gradient backward 2N
        work_tflops = (4 + 2 * share) * n_body * tok_s / 1e12  # + the recomputed forward of checkpointed layers
        run = {
            "batch": batch, "order": order, "status": "ok", "timed_steps": len(timed), "warmup_steps": args.warmup,
            "tokens_per_s": tok_s, "tokens_per_s_median_step": statistics.median(step_rates),
            "s_per_step": secs / len(timed),
            "s_per_step_median": statistics.median(durations[i] for i in timed),
            "nonpad_tokens_per_step": tokens / len(timed), "pad_share": 1 - tokens / padded,
            "supervised_tokens_per_step": sum(stats[i]["supervised"] for i in timed) / len(timed),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else None,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if device != "cpu" else None,
            "recompute_share": share, "estimated_peak_gib": None if plans[batch].need_gib is None else plans[batch].need_gib + allocated / 2**30,
            "model_tflops_4n": model_tflops, "work_tflops": work_tflops,
            "mfu_4n_vs_measured": model_tflops / measured if measured else None,
            "mfu_4n_vs_spec": model_tflops / spec if spec else None,
            "mfu_vs_measured": work_tflops / measured if measured else None,  # with recomputation ((4+2f)N)
            "mfu_vs_spec": work_tflops / spec if spec else None,
            "longest_row": int(lengths[batches[0]].max()), "stats_from": "collator" if collated else "plan",
            "step_s": durations, "steps": stats, "wall_s": wall,
        }
        result["runs"].append(run)
        write_json(out, result)
        mem = f"{run['peak_mem_gib']:.1f} GiB" if run["peak_mem_gib"] is not None else "-"
        mfu = f"{_pct(run['mfu_4n_vs_measured'])} strict 4N, {_pct(run['mfu_vs_measured'])} with recomputation"
        print(f"[{args.backend}] batch {batch:>2} {order:7}: {tok_s:9,.0f} tok/s  {run['s_per_step']:.3f} s/step  "
              f"pad {run['pad_share']:.1%}  peak {mem} (estimated {_gib(run['estimated_peak_gib'])})  "
              f"recomputed {share:.0%}  MFU {mfu} of measured")
    if measured and result["runs"]:
        rate = against_higher_rate(result, result["runs"], ("mfu_4n_vs_measured", "mfu_vs_measured"),
                                   matmul_tflops(device))
        print(f"[{args.backend}] matmul {result['matmul_bf16_tflops_measured_end']:.0f} TFLOP/s at the end; "
              f"the JSON's MFU against measured is against {rate:.0f}")
    result["total_s"] = time.perf_counter() - t_start
    write_json(out, result)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------- summary
def variant(result: dict) -> str:
    """backend + checkpointing setting; JSONs from before `--checkpointing` checkpointed every layer."""
    setting = result.get("checkpointing", True)
    return f"{result['backend']} ckpt={'auto' if setting == 'auto' else str(bool(setting)).lower()}"


def run_mfu_4n(run: dict) -> float | None:
    if "mfu_4n_vs_measured" in run:
        return run["mfu_4n_vs_measured"]
    return run["mfu_vs_measured"] * 4 / 6 if run.get("mfu_vs_measured") is not None else None  # every layer recomputed


def summary(args) -> None:
    from rich.console import Console
    from rich.table import Table

    missing = [f for f in args.files if not Path(f).exists()]
    for f in missing:
        print(f"summary: {f} was not written (that run failed before its first point; see the log)")
    results = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.files if Path(f).exists()]
    if not results:
        raise JinmeiError("summary: none of the bench JSONs exist")
    console = Console(width=180)
    goals, rows = [], []
    for shape in dict.fromkeys(r["shape"] for r in results):
        ok: dict[str, dict] = {}  # variant -> (batch, order) -> run; auto's plans may come from several processes
        status: dict[str, dict] = {}
        for r in (r for r in results if r["shape"] == shape):
            for x in r["runs"]:
                key = (x["batch"], x["order"])
                (ok if x["status"] == "ok" else status).setdefault(variant(r), {})[key] = {**x, "_result": r}
        table = Table(title=f"{shape} on {next(r['device'] for r in results if r['shape'] == shape)}")
        for col in ("batch", "order", "variant", "tokens/s", "median step", "s/step", "peak GiB", "estimated",
                    "recomputed", "pad", "MFU 4N meas.", "MFU w/ recompute", "MFU 4N spec"):
            table.add_column(col, justify="right")
        keys = sorted({k for runs in (*ok.values(), *status.values()) for k in runs},
                      key=lambda k: (k[1] != "grouped", k[0]))
        for key in keys:
            for name in sorted(set(ok) | set(status)):
                x = ok.get(name, {}).get(key)
                if x is None:
                    if key in status.get(name, {}):
                        table.add_row(str(key[0]), key[1], name, status[name][key]["status"], *[""] * 9)
                    continue
                share = x.get("recompute_share", 1.0)
                spec4 = x.get("mfu_4n_vs_spec", x["mfu_vs_spec"] * 4 / 6 if x.get("mfu_vs_spec") else None)
                table.add_row(str(key[0]), key[1], name, f"{x['tokens_per_s']:,.0f}", f"{_median_rate(x):,.0f}",
                              f"{x['s_per_step']:.3f}", _gib(x["peak_mem_gib"]), _gib(x.get("estimated_peak_gib")),
                              f"{share:.0%}", f"{x['pad_share']:.1%}", _pct(run_mfu_4n(x)),
                              _pct(x["mfu_vs_measured"]), _pct(spec4))
                rows.append({"shape": shape, "variant": name, "tokens_per_s_median_step": _median_rate(x),
                             "mfu_4n_vs_measured": run_mfu_4n(x), "mfu_4n_vs_spec": spec4, "recompute_share": share,
                             "estimated_peak_gib": x.get("estimated_peak_gib"),
                             **{k: x[k] for k in ("batch", "order", "tokens_per_s", "s_per_step", "peak_mem_gib",
                                                  "pad_share", "mfu_vs_measured")}})
        console.print(table)
        for r in (r for r in results if r["shape"] == shape):
            console.print(f"  {variant(r)}: matmul {r['matmul_bf16_tflops_measured'] or 0:.0f} TFLOP/s measured, "
                          f"spec {r['bf16_tflops_spec']}; N_body {r['n_body_params'] / 1e9:.3f}B; "
                          f"attention {r['attn_implementation']}; warm-up steps "
                          f"{', '.join(f'{d:.1f}' for d in (r['warmup'] or {}).get('steps_s', []))} s")
        goals += _goals(shape, ok)
    for g in goals:
        console.print(f"goal [{'bold green' if g['met'] else 'bold red'}]{'MET' if g['met'] else 'MISSED'}[/]: "
                      f"{g['goal']} — {g['measured']}")
    write_json(args.out, {"rows": rows, "goals": goals, "inputs": [str(f) for f in args.files]})


def _median_rate(run: dict) -> float:
    """Median over timed steps of non-pad tokens / step time: robust to a single slow step."""
    timed = range(run["warmup_steps"], len(run["step_s"]))
    return statistics.median(run["steps"][i]["nonpad"] / run["step_s"][i] for i in timed)


def _pct(x):
    return f"{x:.1%}" if x is not None else "-"


def _gib(x):
    return f"{x:.1f}" if x is not None else "-"


MFU_GOALS = {"qwen2.5-7b": 0.50, "qwen2.5-1.5b": 0.40}  # strict 4N, of the measured bf16 rate, auto setting


def _goals(shape: str, ok: dict) -> list[dict]:
    goals = []
    for setting in ("true", "auto", "false"):  # Unsloth vs plain at the same checkpointing setting
        hf, us = ok.get(f"hf ckpt={setting}", {}), ok.get(f"unsloth ckpt={setting}", {})
        common = [k for k in hf if k in us and k[1] == "grouped"]
        if common:
            ratios = {k[0]: us[k]["tokens_per_s"] / hf[k]["tokens_per_s"] for k in common}
            med = {k[0]: _median_rate(us[k]) / _median_rate(hf[k]) for k in common}
            text = ", ".join(f"b{b}: {r:.2f}x (median step {med[b]:.2f}x)" for b, r in sorted(ratios.items()))
            goals.append({"shape": shape, "goal": f"{shape} ckpt={setting}: Unsloth >= 2x plain HF",
                          "met": min(*ratios.values(), *med.values()) >= 2.0, "ratios": ratios,
                          "ratios_median_step": med, "measured": text})
    if shape in MFU_GOALS:
        for name, runs in ok.items():
            grouped = [x for k, x in runs.items() if k[1] == "grouped" and run_mfu_4n(x) is not None]
            if grouped and name.endswith("ckpt=auto"):
                best = max(grouped, key=run_mfu_4n)
                goals.append({"shape": shape, "goal": f"{shape} {name}: strict 4N MFU >= {MFU_GOALS[shape]:.0%} "
                                                      "of the measured bf16 rate",
                              "met": run_mfu_4n(best) >= MFU_GOALS[shape], "batch": best["batch"],
                              "measured": f"{run_mfu_4n(best):.1%} at batch {best['batch']} "
                                          f"({best.get('recompute_share', 1.0):.0%} of layers recomputed)"})
    timed = [x for runs in ok.values() for k, x in runs.items() if k[1] == "grouped"]
    if timed:
        worst = max(x["pad_share"] for x in timed)
        goals.append({"shape": shape, "goal": f"{shape}: pad share < 10% (length-grouped batches)",
                      "met": worst < 0.10, "measured": f"worst timed sweep point {worst:.1%}"})
    return goals


KERNEL_KINDS = (  # CUDA kernel name fragments -> what the time went to (first match wins)
    ("attention", ("fmha", "flash", "attention", "efficient_attention", "cutlass_sm90_fmha")),
    ("GEMM", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "wgmma")),
    ("copies (offload, casts)", ("memcpy", "memset", "copy", "cast")),
    ("Triton (Unsloth fused)", ("triton",)),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("other elementwise / reductions", ("",)),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next(kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys))


def profile(args) -> None:
    """Where a step's time goes: CUDA kernel time by kind over a few steps at one batch, against wall time."""
    set_offline_env()
    params = load_all(args.params)
    if args.backend == "unsloth":
        import unsloth  # noqa: F401
    import torch
    from torch.profiler import ProfilerActivity
    from transformers import TrainerCallback

    prompt, answer = synth_lengths(args)
    lengths = prompt + answer
    setting = checkpointing_setting(args.checkpointing, params)
    model, tok, plans, _ = load_backend(args.backend, args.dir, params, args.max_seq_length, args.seed, setting,
                                        [args.batch], int(lengths.max()))
    vocab = model.get_input_embeddings().weight.shape[0]
    warm = epoch_batches(lengths, 1, "random", args)[:2]
    batches = warm + plan_steps(lengths, args.batch, "grouped", args.warmup, args.steps, args)
    rows = [token_row(i, int(prompt[i]), int(answer[i]), vocab, args.seed) for b in batches for i in b]
    first = args.warmup  # step index in the planned part (its own trainer) where the timed steps begin
    on_gpu = torch.cuda.is_available()
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    prof = torch.profiler.profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else []))
    marks = {}

    class Window(TrainerCallback):
        def on_step_begin(self, a, state, control, **k):
            if state.global_step == first:
                sync()
                prof.start()
                marks["start"] = time.perf_counter()

        def on_step_end(self, a, state, control, **k):
            if state.global_step == first + args.steps:
                sync()
                marks["end"] = time.perf_counter()
                prof.stop()

    from datasets import Dataset

    # batch-1 warm-up rows and the planned batches as one sequential epoch; the batch size changes between them,
    # so each part runs in its own trainer (same model)
    for part, (lo, hi, bs) in enumerate(((0, len(warm), 1), (len(warm), len(rows), args.batch))):
        ids, labels = [r[0] for r in rows[lo:hi]], [r[1] for r in rows[lo:hi]]
        steps = len(ids) // bs
        cfg = sft_config(params.train, args.seed, args.backend, 1, output_dir="/tmp/jinmei-bench-profile",
                         lr=params.stage1.lr, steps=steps, per_device=bs, accum=1, save=False, **BENCH_OVERRIDES)
        ds = Dataset.from_dict({"input_ids": ids, "labels": labels, "length": [len(x) for x in ids]})
        trainer = stages_trainer(model, tok, cfg, ds, (), stages_answer_head(args.backend, params))
        if part == 1:
            trainer.add_callback(Window())
        trainer.train()
        del trainer
    wall = marks["end"] - marks["start"]
    kinds: dict[str, float] = {}
    top = []
    for evt in prof.key_averages():
        if str(getattr(evt, "device_type", "")).split(".")[-1] != "CUDA":
            continue
        us = float(getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0) or 0)
        kinds[kernel_kind(evt.key)] = kinds.get(kernel_kind(evt.key), 0.0) + us / 1e6
        top.append((us / 1e6, evt.count, evt.key[:160]))
    busy = sum(kinds.values())
    top.sort(reverse=True)
    tokens = sum(int(lengths[b].sum()) for b in batches[len(warm) + args.warmup:])
    result = {"backend": args.backend, "shape": args.shape, "batch": args.batch, "steps": args.steps,
              "checkpointing": setting, "plan": plans[args.batch].as_metrics(), "wall_s": wall,
              "kernel_s_total": busy, "kernel_s_by_kind": kinds,
              "kernel_share_of_wall": {k: v / wall for k, v in kinds.items()},
              "tokens_per_s_profiled": tokens / wall, "top_kernels": [
                  {"s": t, "calls": c, "kernel": n, "kind": kernel_kind(n)} for t, c, n in top[:40]],
              "note": "kernel times summed over all streams (offload copies overlap compute); profiler on"}
    write_json(args.out, result)
    print(f"[profile] {args.shape} b{args.batch}: {args.steps} steps, wall {wall:.2f} s, kernels {busy:.2f} s")
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"[profile]   {k:32s} {v:7.3f} s  {v / wall:6.1%} of wall")
    for t, c, n in top[:12]:
        print(f"[profile]   {t:7.3f} s  x{c:<5d} {n[:110]}")


def pads(args) -> None:
    prompt, answer = synth_lengths(args)
    table = pads_table(prompt, answer, args.batches, args)
    result = {"data": data_summary(prompt, answer, args), "pad_share": table}
    print(json.dumps(result["data"], indent=1))
    for row in table:
        print(f"batch {row['batch']:>2}: random {row['random']['pad_share']:.1%}  "
              f"grouped {row['grouped']['pad_share']:.1%}  (grouped p90 step {row['grouped']['pad_share_step_p90']:.1%})")
    if args.out:
        write_json(args.out, result)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    b = sub.add_parser("build", help="write a random-weight model folder")
    b.add_argument("--shape", choices=sorted(SHAPES), required=True)
    b.add_argument("--dir", required=True)
    b.add_argument("--device", default="auto")
    b.add_argument("--seed", type=int, default=20261124)

    r = sub.add_parser("bench", help="one backend, per-device batch sweep")
    r.add_argument("--backend", choices=["hf", "unsloth"], required=True)
    r.add_argument("--shape", choices=sorted(SHAPES), required=True)
    r.add_argument("--dir", required=True, help="model folder written by `build`")
    r.add_argument("--out", required=True, help="JSON written after every sweep point")
    r.add_argument("--batches", type=ints, default=[1, 2, 4, 8, 16], help="per-device batches, length-grouped")
    r.add_argument("--random-batches", type=ints, default=[], help="batches also run in random order")
    r.add_argument("--warmup", type=int, default=2, help="untimed steps per point (the first is the longest batch)")
    r.add_argument("--steps", type=int, default=6, help="timed steps per point")
    r.add_argument("--max-seq-length", type=int, default=4096)
    r.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="lora and train sections as the stages read them (e.g. params.yaml after applying "
                        "profiles/production.yaml)")
    r.add_argument("--time-budget", type=float, default=1e9, help="seconds; later points are skipped past it")
    r.add_argument("--spec-tflops", type=float, default=None, help="default: 989 for H100/H200 (dense bf16)")
    r.add_argument("--device", default="auto")
    r.add_argument("--checkpointing", choices=["params", "true", "false", "auto"], default="params",
                   help="train.gradient_checkpointing for this run (params = the params file's value)")
    add_data_args(r)

    f = sub.add_parser("profile", help="CUDA kernel time by kind over a few steps at one batch")
    f.add_argument("--backend", choices=["hf", "unsloth"], required=True)
    f.add_argument("--shape", choices=sorted(SHAPES), required=True)
    f.add_argument("--dir", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--batch", type=int, default=8)
    f.add_argument("--warmup", type=int, default=2)
    f.add_argument("--steps", type=int, default=3)
    f.add_argument("--max-seq-length", type=int, default=4096)
    f.add_argument("--params", type=Path, default=Path("params.yaml"))
    f.add_argument("--checkpointing", choices=["params", "true", "false", "auto"], default="params")
    add_data_args(f)

    s = sub.add_parser("summary", help="table + goals from bench JSONs")
    s.add_argument("files", nargs="+")
    s.add_argument("--out", required=True)

    d = sub.add_parser("pads", help="pad share of random vs length-grouped batches")
    d.add_argument("--batches", type=ints, default=[1, 2, 4, 8, 16, 32])
    d.add_argument("--out", default=None)
    add_data_args(d)

    args = p.parse_args(argv)
    {"build": build, "bench": bench, "profile": profile, "summary": summary, "pads": pads}[args.cmd](args)


if __name__ == "__main__":
    run_main(main)
