"""Where a training step's host time goes: the stages' own trainer, one suspect switched off at a time.

Why: a step whose GPU waits for the host is paid for in GPU hours. This runs the stages' trainer (jinmei.train.
trainer: sft_config, and make_trainer where the checkout has it, else the plain SFTTrainer the older stages built)
on the synthetic rows of train_throughput.py, once per variant, every variant from the same fresh adapter over the
same batches. Run it from an older checkout (PYTHONPATH=<old checkout>) and from this one, one after the other on
the same card, for old code against new.

Two clocks per variant, never mixed: `window` = one synchronisation before the first timed step and one after the
last (what a run costs); `per_step` = a synchronisation at every step end (what benchmarks usually do, and what
hides the host/GPU overlap the stages rely on). A variant named `NAME:cuda` runs under the torch profiler (CUDA
activity): the share of the window in which no kernel or copy runs on the GPU, and the synchronising CUDA calls per
step; `NAME:cpu` also records the host's operators. Profiled runs are a little slower than unprofiled ones.

Variants (each one change to the `stages` configuration):
  stages          the trainer and settings the stages run (bench changes: constant lr, no warm-up, fixed order)
  per_step_clock  stages, timed with a synchronisation at every step end
  no_logging      no loss point during the window (a point reads the loss back: a wait for the GPU)
  no_token_count  include_num_input_tokens_seen off (transformers reads the count back every batch; make_trainer
                  keeps it on the device, so this changes nothing there)
  no_flos         Trainer.floating_point_ops returns 0 (a walk over every module every batch)
  no_callback     without the stages' progress callback (rich bar; dvclive is measured by `dvclive`)
  workers         batches fetched and padded by 2 worker processes instead of the training loop
  fused_adamw     optim adamw_torch_fused (torch's one-kernel AdamW)
  adamw_8bit      optim adamw_8bit (bitsandbytes, a kernel per tensor; Unsloth's default)
  pad64           batches padded to a multiple of 64 tokens (fewer shapes for compiled kernels)
  full_head       the LM head and loss over every position, as Unsloth's fused loss does (the stages put it on
                  answer tokens only: jinmei.train.loss); the same loss to bf16 rounding
  compile         the whole model under torch.compile (the Trainer's torch_compile; Unsloth compiles each block)
  compile_graphs  compile with mode reduce-overhead (CUDA graphs: one replay per batch shape) and batches padded to
                  a multiple of 64 tokens, so that few shapes are recorded
                  (both compile each batch shape on first sight, inside the window too: read its dynamo_delta)
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import train_throughput as tt  # noqa: E402  (puts the jinmei on PYTHONPATH, or this checkout's, on sys.path)

from jinmei.config.params import load_all  # noqa: E402
from jinmei.errors import JinmeiError, run_main  # noqa: E402
from jinmei.files import write_json  # noqa: E402
from jinmei.runtime import set_offline_env  # noqa: E402
from train_throughput import stages  # noqa: E402  (whichever jinmei.train.trainer train_throughput imported)

VARIANTS = ("stages", "per_step_clock", "no_logging", "no_token_count", "no_flos", "no_callback", "workers",
            "fused_adamw", "adamw_8bit", "pad64", "full_head", "compile", "compile_graphs")
BENCH = {k: v for k, v in tt.BENCH_OVERRIDES.items() if k != "logging_steps"}  # the loss cadence is a suspect here
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def configure(cfg, variant: str, logging_steps: int):
    """The variant's one change, made on the stages' SFTConfig (an older sft_config refuses unknown overrides)."""
    from transformers.training_args import OptimizerNames

    cfg.logging_steps = 10 ** 6 if variant == "no_logging" else logging_steps
    if variant == "no_token_count":
        cfg.include_num_input_tokens_seen = "no"
    if variant == "workers":
        cfg.dataloader_num_workers, cfg.dataloader_persistent_workers, cfg.dataloader_pin_memory = 2, True, True
    if variant in ("fused_adamw", "adamw_8bit"):
        cfg.optim = OptimizerNames("adamw_torch_fused" if variant == "fused_adamw" else "adamw_8bit")
    if variant in ("pad64", "compile_graphs"):
        cfg.pad_to_multiple_of = 64
    if variant in ("compile", "compile_graphs"):
        cfg.torch_compile, cfg.torch_compile_backend = True, "inductor"
        cfg.torch_compile_mode = "reduce-overhead" if variant == "compile_graphs" else None
    return cfg


@contextlib.contextmanager
def dynamo_for(trainer, cfg):
    """accelerate keeps one process-wide state, made by the first Trainer (the warm-up, uncompiled), compiles the
    model by that state's plugin, and never prepares a model twice: the compile variants set the plugin for their own
    run, let the model be prepared again, and put the old plugin back after."""
    if not cfg.torch_compile:
        yield
        return
    from accelerate.utils import TorchDynamoPlugin

    state = trainer.accelerator.state
    before = state.dynamo_plugin
    state.dynamo_plugin = TorchDynamoPlugin(backend=cfg.torch_compile_backend, mode=cfg.torch_compile_mode)
    trainer.model._is_accelerate_prepared = False
    try:
        yield
    finally:
        state.dynamo_plugin = before


def build_trainer(model, tok, cfg, ds, callbacks, variant: str, answer_head_loss: str | None = None):
    trainer = tt.stages_trainer(model, tok, cfg, ds, callbacks, None if variant == "full_head" else answer_head_loss)
    if variant == "no_flos":
        trainer.floating_point_ops = lambda inputs: 0
    return trainer


class Window:
    """Callback: the timed window opens before step `first` and closes at train end; optional per-step marks
    and a torch profiler over the window."""

    def __init__(self, first: int, per_step: bool, profiler=None):
        import torch
        from transformers import TrainerCallback

        w, sync = self, (torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None))

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == first:
                    sync()
                    if profiler is not None:
                        profiler.start()
                    w.start = time.perf_counter()
                    w.marks = [w.start]

            def on_step_end(self, args, state, control, **kw):
                if per_step and state.global_step > first:
                    sync()
                    w.marks.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kw):
                sync()
                w.end = time.perf_counter()
                if profiler is not None:
                    profiler.stop()

        self.callback, self.start, self.end, self.marks = _CB(), None, None, []


def gpu_busy(prof) -> dict:
    """Union of the GPU's kernel and copy intervals (any stream), and the host's synchronising calls."""
    spans, calls = [], {}
    for e in prof.events():
        kind = str(getattr(e, "device_type", "")).split(".")[-1]
        if kind == "CUDA":
            spans.append((e.time_range.start, e.time_range.end))
        elif e.name in SYNC_CALLS or e.name.startswith("cudaLaunch") or e.name.startswith("cuLaunch"):
            key = "launches" if "aunch" in e.name else e.name
            calls[key] = calls.get(key, 0) + 1
    spans.sort()
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            busy += 0.0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += 0.0 if cur_e is None else cur_e - cur_s
    return {"busy_s": busy / 1e6, "calls": calls}


def host_ops(prof, top: int = 25) -> list[dict]:
    """The host's own time by operator (self CPU time), for attribution."""
    rows = [(e.self_cpu_time_total / 1e6, e.count, e.key) for e in prof.key_averages()
            if getattr(e, "self_cpu_time_total", 0)]
    rows.sort(reverse=True)
    return [{"self_cpu_s": round(t, 4), "calls": c, "op": k[:120]} for t, c, k in rows[:top]]


def dynamo_counts() -> dict:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {f"{g}.{k}": v for g in ("stats", "frames", "recompiles") for k, v in counters.get(g, {}).items()}


def run(args) -> None:
    set_offline_env()
    params = load_all(args.params)
    code = "stages' make_trainer" if hasattr(stages, "make_trainer") else "older stages: plain SFTTrainer"
    checkout = Path(stages.__file__).resolve().parents[2]
    checkout = "this checkout" if checkout == Path(__file__).resolve().parents[1] else str(checkout)
    print(f"[host] jinmei from {checkout} ({code}); params {args.params}", flush=True)
    if args.backend == "unsloth":
        import unsloth  # noqa: F401
    import torch
    from datasets import Dataset
    from torch.profiler import ProfilerActivity

    on_gpu = torch.cuda.is_available()  # the CPU: the plain backend, for the tests and CPU comparisons
    if args.backend == "unsloth" and not on_gpu:
        raise JinmeiError("--backend unsloth needs a CUDA GPU; use --backend hf on the CPU")
    gpu = torch.cuda.get_device_name(0) if on_gpu else platform.processor() or "cpu"
    measured = tt.matmul_tflops("cuda" if on_gpu else "cpu")
    prompt, answer = tt.synth_lengths(args)
    lengths = prompt + answer
    setting = tt.checkpointing_setting(args.checkpointing, params)
    torch.manual_seed(args.seed)  # as the stages do: the same fresh adapter in every process (old code and new)
    model, tok, plans, _ = tt.load_backend(args.backend, args.dir, params, args.max_seq_length, args.seed, setting,
                                           [args.batch], int(lengths.max()))
    n_body, _ = tt.body_matmul_params(model)
    vocab = model.get_input_embeddings().weight.shape[0]
    fresh = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def dataset(batches):
        rows = [tt.token_row(i, int(prompt[i]), int(answer[i]), vocab, args.seed) for b in batches for i in b]
        return Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows],
                                  "length": [len(r[0]) for r in rows]})

    batches = tt.plan_steps(lengths, args.batch, "grouped", args.warmup, args.steps, args)
    ds = dataset(batches)
    timed_tokens = sum(int(lengths[b].sum()) for b in batches[args.warmup:])
    run_logging = (stages.logging_every(params.train.logging_steps, args.run_steps)
                   if hasattr(stages, "logging_every") else 1)
    result = {"device": gpu, "backend": args.backend, "shape": args.shape, "batch": args.batch, "code": code,
              "jinmei": checkout, "params": str(args.params),
              "versions": {"torch": torch.__version__, "python": platform.python_version(),
                           "unsloth": tt._version("unsloth"), "transformers": tt._version("transformers")},
              "checkpointing": setting, "plan": plans[args.batch].as_metrics(), "n_body_params": n_body,
              "matmul_bf16_tflops_measured": measured, "warmup_steps": args.warmup, "timed_steps": args.steps,
              "timed_nonpad_tokens": timed_tokens, "logging_steps": run_logging, "run_steps": args.run_steps,
              "data": tt.data_summary(prompt, answer, args), "variants": {}}
    print(f"[host] {gpu} {args.shape} b{args.batch}: matmul {measured or 0:.0f} TFLOP/s, {len(batches)} steps per "
          f"variant ({args.warmup} untimed), logging every {run_logging}", flush=True)

    # compile warm-up on a few batch-1 steps, as train_throughput.py does
    warm = tt.epoch_batches(lengths, 1, "random", args)[:3]
    wcfg = stages.sft_config(params.train, args.seed, args.backend, 1, output_dir="/tmp/jinmei-host-warm",
                             lr=float(params.stage1.lr), steps=len(warm), per_device=1, accum=1, save=False,
                             **BENCH)
    t0 = time.perf_counter()
    answer_head_loss = tt.stages_answer_head(args.backend, params)
    result["answer_head_loss"] = answer_head_loss
    build_trainer(model, tok, wcfg, dataset(warm), [], "stages", answer_head_loss).train()
    result["warmup_s"] = time.perf_counter() - t0
    adapters = {}

    def one(variant: str, profile: str | None = None) -> dict:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in fresh:
                    p.copy_(fresh[n])
        model.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        cfg = stages.sft_config(params.train, args.seed, args.backend, 1, output_dir=f"/tmp/jinmei-host-{variant}",
                                lr=float(params.stage1.lr), steps=len(batches), per_device=args.batch, accum=1,
                                save=False, **BENCH)
        configure(cfg, variant, run_logging)
        prof = None
        if profile:
            acts = ([ProfilerActivity.CUDA] if on_gpu else []) + ([ProfilerActivity.CPU] if profile == "cpu" or
                                                                   not on_gpu else [])
            prof = torch.profiler.profile(activities=acts)
        window = Window(args.warmup, variant == "per_step_clock", prof)
        callbacks = [] if variant == "no_callback" else [stages._callbacks(None, len(batches), "stage1", False)]
        trainer = build_trainer(model, tok, cfg, ds, callbacks + [window.callback], variant, answer_head_loss)
        before = dynamo_counts()
        with dynamo_for(trainer, cfg):
            out = trainer.train()
        after = dynamo_counts()
        wall = window.end - window.start
        res = {"window_s": wall, "s_per_step": wall / args.steps, "tokens_per_s": timed_tokens / wall,
               "mfu_4n": 4 * n_body * timed_tokens / wall / (measured * 1e12) if measured else None,
               "train_loss": out.training_loss,
               "dynamo_delta": {k: after.get(k, 0) - before.get(k, 0) for k in after
                                if after.get(k, 0) != before.get(k, 0)}}
        if window.marks and len(window.marks) > 1:
            steps = [b - a for a, b in zip(window.marks, window.marks[1:])]
            res["per_step_s"] = steps
            res["per_step_sum_s"] = sum(steps)
            res["per_step_median_s"] = statistics.median(steps)
        if prof is not None:
            g = gpu_busy(prof)
            res.update({"profile": profile, "gpu_busy_s": g["busy_s"], "idle_share": 1 - g["busy_s"] / wall,
                        "calls_per_step": {k: v / args.steps for k, v in g["calls"].items()}})
            if profile == "cpu":
                res["host_ops"] = host_ops(prof)
        if on_gpu:
            res["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if variant in ("stages", "adamw_8bit", "fused_adamw", "full_head") and not profile:
            adapters[variant] = {n: p.detach().float().cpu() for n, p in model.named_parameters() if n in fresh}
        del trainer
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        return res

    # the target batch's own shapes compile on the first pass over them: one untimed pass before any variant
    t0 = time.perf_counter()
    result["shape_warmup"] = {**one("stages"), "total_s": time.perf_counter() - t0}
    adapters.clear()
    write_json(args.out, result)
    for spec in args.variants:
        variant, _, profile = spec.partition(":")
        if variant not in VARIANTS:
            raise JinmeiError(f"--variants {spec}: choose from {', '.join(VARIANTS)} (optionally :cuda or :cpu)")
        try:
            res = one(variant, profile or None)
        except Exception as exc:  # noqa: BLE001  one failing variant is recorded, the rest still run
            res = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            model.zero_grad(set_to_none=True)
            gc.collect()
            if on_gpu:
                torch.cuda.empty_cache()
        result["variants"][spec] = res
        print(f"[host] {spec:24s} " + (res["error"] if "error" in res else
              f"{res['s_per_step'] * 1e3:8.1f} ms/step  {res['tokens_per_s']:10,.0f} tok/s  "
              f"MFU {res['mfu_4n'] or 0:.1%}  loss {res['train_loss']:.4f}"
              + (f"  idle {res['idle_share']:.1%}" if "idle_share" in res else "")
              + (f"  per-step clock {res['per_step_median_s'] * 1e3:.1f} ms median" if "per_step_s" in res else "")),
              flush=True)
        write_json(args.out, result)

    if on_gpu:
        rate = tt.against_higher_rate(result, list(result["variants"].values()), ("mfu_4n",), tt.matmul_tflops("cuda"))
        print(f"[host] matmul {result['matmul_bf16_tflops_measured_end']:.0f} TFLOP/s at the end; "
              f"the JSON's mfu_4n is against {rate:.0f}", flush=True)
    if {"stages", "full_head"} <= adapters.keys():  # two runs of the same batches: how far apart they end
        result["answer_head_vs_full_head"] = adapter_diff(adapters["stages"], adapters["full_head"])
    if args.save_checkpoint_probe:
        result["checkpoint_save_s"] = save_probe(model, tok, params, args, ds)
    if args.save_adapter and "stages" in adapters:
        torch.save(adapters["stages"], args.save_adapter)
    if args.compare_adapter and Path(args.compare_adapter).exists():
        ref = torch.load(args.compare_adapter, weights_only=True)
        result["adapter_vs_reference"] = {v: adapter_diff(a, ref) for v, a in adapters.items()}
    write_json(args.out, result)


def adapter_diff(a: dict, ref: dict) -> dict:
    """How far two trained adapters are apart: largest element difference over the largest element."""
    import torch

    if a.keys() != ref.keys():
        return {"error": "different adapter tensors"}
    worst = max(float((a[k] - ref[k]).abs().max()) for k in a)
    scale = max(float(ref[k].abs().max()) for k in ref)
    rel = [float((a[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-12)) for k in a]
    return {"max_abs_diff": worst, "max_abs": scale, "median_rel_norm_diff": statistics.median(rel),
            "equal": all(torch.equal(a[k], ref[k]) for k in a)}


def save_probe(model, tok, params, args, ds) -> float:
    """One checkpoint save as the stages make it (adapter, optimizer, scheduler, trainer state)."""
    import torch

    cfg = stages.sft_config(params.train, args.seed, args.backend, 1, output_dir="/tmp/jinmei-host-save",
                            lr=float(params.stage1.lr), steps=1, per_device=args.batch, accum=1, save=True, **BENCH)
    trainer = build_trainer(model, tok, cfg, ds, [], "stages")
    trainer.train()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    trainer._save_checkpoint(trainer.model, None)
    sync()
    return time.perf_counter() - t0


def dvclive_cost(args) -> None:
    """Host time of the stages' dvclive logging per loss point (CPU only: no GPU involved)."""
    import tempfile

    from dvclive import Live

    with tempfile.TemporaryDirectory() as d:
        live = Live(dir=d, report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False)
        t0 = time.perf_counter()
        for step in range(args.points):
            live.step = step
            for key in ("loss", "learning_rate", "grad_norm"):
                live.log_metric(f"train/{key}", 1.0 / (step + 1))
            live.next_step()
        per = (time.perf_counter() - t0) / args.points
        live.end()
    result = {"points": args.points, "ms_per_point": per * 1e3, "cpu": platform.processor() or platform.machine()}
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)


SUSPECTS = (  # (variant, what it switches off, sign): cost = sign x (variant - baseline) in ms per step
    ("per_step_clock", "the benchmark's own synchronisation at every step end", +1),
    ("no_logging", "a loss point every step (loss and grad norm read back, rich and dvclive updates)", -1),
    ("no_token_count", "the token count read back every batch (include_num_input_tokens_seen)", -1),
    ("no_flos", "transformers' FLOP estimate: a walk over every module every batch", -1),
    ("no_callback", "the stages' progress callback (rich bar)", -1),
    ("workers", "batches fetched and padded inside the training loop (no worker processes)", -1),
    ("fused_adamw", "bitsandbytes' 8-bit AdamW, a kernel per tensor (Unsloth's default) vs torch's fused one", -1),
    ("pad64", "padding to a multiple of 64 tokens (fewer shapes, more tokens)", +1),
)


CLOCKS = (  # (variant, code label or None for old/new, clock) of the old-vs-new table
    ("per_step_clock", None, "synchronised every step"),
    ("stages", None, "one synchronisation"),
    ("full_head", "new, LM head on every position", "one synchronisation"),
    ("stages:cuda", None, "one synchronisation, profiler on"),
)


def summary(args) -> None:
    """Per-suspect table (older code) and old vs new per shape, from the JSONs of `run`."""
    runs = {}
    for f in args.files:
        d = json.loads(Path(f).read_text(encoding="utf-8"))
        runs[(d["shape"], d["batch"], "new" if "make_trainer" in d["code"] else "old")] = d
    lines, table = [], {"suspects": [], "old_vs_new": []}
    shapes = sorted({(s, b) for s, b, _ in runs},
                    key=lambda k: next(runs[(*k, c)]["n_body_params"] for c in ("old", "new") if (*k, c) in runs))
    lines += ["| shape, batch | suspect | ms per step | share of the step |", "|---|---|---:|---:|"]
    for shape, batch in shapes:
        old = runs.get((shape, batch, "old"))
        base = old and old["variants"].get(args.baseline)
        if not base or "error" in base:
            continue
        step_ms = base["s_per_step"] * 1e3
        for variant, what, sign in SUSPECTS:
            v = old["variants"].get(variant)
            if not v or "error" in v:
                continue
            cost = sign * (v["s_per_step"] * 1e3 - step_ms)
            table["suspects"].append({"shape": shape, "batch": batch, "variant": variant, "suspect": what,
                                      "ms_per_step": round(cost, 1), "share": round(cost / step_ms, 4)})
            lines.append(f"| {shape} b{batch} | {what} | {cost:+.1f} | {cost / step_ms:+.1%} |")
        if old.get("checkpoint_save_s"):
            save = old["checkpoint_save_s"] * 1e3
            for every in (10, 200):
                lines.append(f"| {shape} b{batch} | a checkpoint save every {every} steps ({save:,.0f} ms each) | "
                             f"{save / every:+.1f} | {save / every / step_ms:+.1%} |")
    lines += ["", "| shape, batch | code | clock | ms/step | tokens/s | strict 4N MFU | GPU idle | mean loss |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for shape, batch in shapes:
        for code in ("old", "new"):
            d = runs.get((shape, batch, code))
            if d is None:
                continue
            for variant, label, clock in CLOCKS:
                v = d["variants"].get(variant)
                if not v or "error" in v:
                    continue
                label = label or code
                idle = f"{v['idle_share']:.1%}" if "idle_share" in v else "-"
                lines.append(f"| {shape} b{batch} ({d['plan']['checkpointed']}/{d['plan']['layers']} recomputed) | "
                             f"{label} | {clock} | {v['s_per_step'] * 1e3:,.1f} | {v['tokens_per_s']:,.0f} | "
                             f"{tt._pct(v['mfu_4n'])} | {idle} | {v['train_loss']:.4f} |")
                table["old_vs_new"].append({"shape": shape, "batch": batch, "code": label, "clock": clock,
                                            **{k: v.get(k) for k in ("s_per_step", "tokens_per_s", "mfu_4n",
                                                                     "idle_share", "train_loss",
                                                                     "calls_per_step")}})
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out_md).write_text(text, encoding="utf-8")
    write_json(args.out, table)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="variants of the stages' trainer on one GPU, one shape, one batch")
    r.add_argument("--backend", choices=["hf", "unsloth"], default="unsloth")
    r.add_argument("--shape", choices=sorted(tt.SHAPES), required=True)
    r.add_argument("--dir", required=True, help="model folder written by `train_throughput.py build`")
    r.add_argument("--out", required=True)
    r.add_argument("--batch", type=int, required=True, help="rows per step (per device, no accumulation)")
    r.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                   help="comma list; name:cuda or name:cpu adds the profiler (idle share; cpu: host operators)")
    r.add_argument("--warmup", type=int, default=3, help="untimed steps (the first is the longest batch)")
    r.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    r.add_argument("--run-steps", type=int, default=1170,
                   help="the optimizer steps of the run being modelled: sets train.logging_steps: auto")
    r.add_argument("--max-seq-length", type=int, default=4096)
    r.add_argument("--params", type=Path, default=Path("params.yaml"))
    r.add_argument("--checkpointing", choices=["params", "true", "false", "auto"], default="params")
    r.add_argument("--save-checkpoint-probe", action="store_true", help="also time one checkpoint save")
    r.add_argument("--save-adapter", default=None, help="write the `stages` variant's trained adapter here")
    r.add_argument("--compare-adapter", default=None, help="compare this run's adapters with one saved earlier")
    tt.add_data_args(r)
    d = sub.add_parser("dvclive", help="host ms per dvclive loss point (CPU)")
    d.add_argument("--points", type=int, default=200)
    d.add_argument("--out", default=None)
    m = sub.add_parser("summary", help="per-suspect and old-vs-new tables from run JSONs")
    m.add_argument("files", nargs="+")
    m.add_argument("--baseline", default="stages",
                   help="the older code's variant that ran its stages configuration with the window clock")
    m.add_argument("--out", required=True)
    m.add_argument("--out-md", required=True)
    args = p.parse_args(argv)
    {"run": run, "dvclive": dvclive_cost, "summary": summary}[args.cmd](args)


if __name__ == "__main__":
    run_main(main)
