"""The training loop shared by sanity, stage1 and stage2: one recipe, two backends (Unsloth on a GPU,
transformers + peft + TRL otherwise), the same examples and masks on both (jinmei.train.examples).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinmei.train import memory
from jinmei.errors import JinmeiError
from jinmei.train.examples import encode_rows
from jinmei.train.loss import AnswerHead, AnswerPositions, compute_loss as answer_only_loss
from jinmei.files import atomic_path, write_json


# ---------------------------------------------------------------- batch geometry


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def accumulation_steps(global_batch: int, per_device: int, world: int) -> int:
    """Gradient accumulation that keeps the global batch fixed whatever the number of GPUs."""
    if global_batch % (per_device * world):
        raise JinmeiError(
            f"params.yaml: train.global_batch={global_batch} is not divisible by train.per_device_batch="
            f"{per_device} x {world} process(es); choose a per_device_batch with per_device_batch x {world} "
            f"dividing {global_batch}, or change train.global_batch"
        )
    return global_batch // (per_device * world)


def optimizer_steps(epochs: float, n_examples: int, global_batch: int) -> int:
    return max(1, math.ceil(epochs * n_examples / global_batch))


def process_count(processes: int | str, count_gpus: bool = True) -> int:
    """train.processes: 'auto' = one process per visible GPU."""
    if processes != "auto":
        return int(processes)
    if not count_gpus:
        return 1
    try:
        import torch
    except ImportError:
        return 1
    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def maybe_launch_distributed(module: str, train, argv: list[str] | None) -> None:
    """With several GPUs (or train.processes > 1), re-run this stage as one process per device via torchrun."""
    if "LOCAL_RANK" in os.environ:
        return
    processes = process_count(train.processes)
    if processes <= 1:
        return
    accumulation_steps(train.global_batch, train.per_device_batch, processes)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", module, *(sys.argv[1:] if argv is None else argv)]
    print(f"launching {processes} processes: {' '.join(cmd)}", flush=True)
    os.execv(sys.executable, cmd)


# ---------------------------------------------------------------- model


def choose_backend(name: str) -> str:
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None:
        return "unsloth"
    return "hf"


@dataclass
class LoraSpec:
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


def load_base(base_dir: Path, backend: str, max_seq_length: int):
    """The frozen base model and its tokenizer, on either backend, bf16 on GPU (never 4-bit)."""
    import torch

    on_gpu = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_gpu:  # before anything touches CUDA: else every torchrun rank reads (and holds a context on) GPU 0
        torch.cuda.set_device(local_rank)
    if backend == "unsloth":
        import unsloth  # noqa: F401  (must come before transformers/peft/trl are used)
        from unsloth import FastLanguageModel

        return FastLanguageModel.from_pretrained(
            model_name=str(base_dir), max_seq_length=max_seq_length, dtype=torch.bfloat16,
            load_in_4bit=False, load_in_8bit=False, full_finetuning=False,
            device_map={"": local_rank}, local_files_only=True,
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if on_gpu else torch.float32, "attn_implementation": "sdpa"}
    if on_gpu:
        kwargs["device_map"] = {"": local_rank}
    return AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, **kwargs), tokenizer


def checkpoint_plan(setting, model, backend: str, lora: LoraSpec, rows: int, longest: int) -> memory.Plan:
    """train.gradient_checkpointing for this model and this stage's longest batch (jinmei.train.memory)."""
    return memory.plan(setting, memory.Shape.of(model.config), backend, lora.r, lora.target_modules, rows, longest,
                       memory.usable_cuda_bytes(), lora.dropout)


def add_lora(model, backend: str, lora: LoraSpec, seed: int, ckpt: memory.Plan):
    """A fresh LoRA adapter on the base, with the plan's layers checkpointed (the others keep activations)."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, bias="none", random_state=seed,
            use_gradient_checkpointing="unsloth" if ckpt.checkpointed else False,
            checkpoint_skip_layers=len(ckpt.kept) if ckpt.checkpointed else 0,  # same evenly spaced layers
        )
    from peft import LoraConfig, get_peft_model

    if ckpt.checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        layers = decoder_layers(model)
        for i in ckpt.kept:
            layers[i].gradient_checkpointing = False
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def decoder_layers(model) -> list:
    """The decoder blocks transformers can checkpoint one by one, in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise JinmeiError(f"{type(model).__name__}: no decoder layers transformers can checkpoint; "
                          "set train.gradient_checkpointing: false")
    return layers


def load_model(base_dir: Path, backend: str, lora: LoraSpec, max_seq_length: int, seed: int, grad_ckpt: bool):
    """Base + fresh adapter with every layer checkpointed or none (tests; the stages plan per batch in `train`)."""
    model, tokenizer = load_base(base_dir, backend, max_seq_length)
    ckpt = checkpoint_plan(bool(grad_ckpt), model, backend, lora, 1, max_seq_length)
    return add_lora(model, backend, lora, seed, ckpt), tokenizer


def load_adapter_weights(model, adapter_dir: Path) -> None:
    """Continue a saved adapter: load its weights into the identically configured fresh adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        raise JinmeiError(f"{weights}: not found; run the stage that writes {adapter_dir} first")
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    current = model.peft_config["default"]
    for key in ("r", "lora_alpha"):
        if saved.get(key) != getattr(current, key):
            raise JinmeiError(f"{adapter_dir}: adapter has {key}={saved.get(key)}, params.yaml lora asks "
                              f"{getattr(current, key)}; rerun the earlier stage with the same lora params")
    result = set_peft_model_state_dict(model, load_file(str(weights)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise JinmeiError(f"{weights}: {len(unexpected)} tensors do not match the model ({unexpected[:2]} ...)")


# ---------------------------------------------------------------- callbacks


def _callbacks(live_dir: Path | None, total_steps: int, label: str, resume: bool):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """dvclive curves per logged step (train.logging_steps) and a rich progress bar on the terminal."""

        def __init__(self):
            self.live = None
            self.losses: list[tuple[int, float]] = []
            self.progress = None

        def on_train_begin(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            if live_dir is not None:
                try:
                    from dvclive import Live
                except ImportError:  # a bare GPU box without dvc: the rich bar and metrics JSON still report
                    print("dvclive is not installed: no loss curve files", file=sys.stderr)
                    Live = None
            if live_dir is not None and Live is not None:
                self.live = Live(dir=str(live_dir), resume=resume, report=None, save_dvc_exp=False,
                                 dvcyaml=None, monitor_system=False)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn, TimeRemainingColumn

            self.progress = RichProgress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                         TimeRemainingColumn(), transient=False)
            self.progress.start()
            self.task = self.progress.add_task(label, total=total_steps, completed=state.global_step, info="")

        def on_step_end(self, args, state, control, **kw):  # the bar moves every step; the loss waits for a log
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs:
                return
            if not math.isfinite(float(logs["loss"])):  # every rank stops, not only the one that prints
                raise JinmeiError(f"[{label}] the training loss is {logs['loss']} at step {state.global_step}: "
                                  f"lower {label}.lr (or train.max_grad_norm) in params.yaml and rerun")
            if not state.is_world_process_zero:
                return
            self.losses.append((state.global_step, float(logs["loss"])))
            if self.live is not None:
                self.live.step = state.global_step
                for key in ("loss", "learning_rate", "grad_norm"):
                    if key in logs:
                        self.live.log_metric(f"train/{key}", float(logs[key]))
                self.live.next_step()
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step,
                                     info=f"loss {logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kw):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)
                self.progress.stop()
            if self.live is not None:
                self.live.end()

    return Progress()


# ---------------------------------------------------------------- run


@dataclass(frozen=True)
class TrainRun:
    """One training run: the stage's params and its own section, the rows it trains on, and where things go.

    `p` holds what every training stage declares (seed, prompt, schema.fields, base.max_seq_length, lora, train);
    `section` is the stage's own (sanity: lr, steps, global_batch; stage1/stage2: lr, epochs, lora_dropout), read
    where it is used, so a knob reaches the library call in a step or two.
    """

    label: str
    p: Any
    section: Any
    rows: list[dict[str, Any]]
    base_dir: Path
    init_adapter: Path | None = None  # stage2 continues stage1's adapter
    checkpoint_dir: Path | None = None
    live_dir: Path | None = None

    @property
    def steps(self) -> int | None:
        """Fixed optimizer steps (sanity), or None: epochs over the rows (stage1/stage2)."""
        return getattr(self.section, "steps", None)

    @property
    def epochs(self) -> float | None:
        return None if self.steps is not None else float(self.section.epochs)

    @property
    def global_batch(self) -> int:
        """sanity.global_batch overrides train.global_batch: small batches overfit in few steps."""
        own = getattr(self.section, "global_batch", None)
        return int(own or self.p.train.global_batch)

    @property
    def lora(self) -> LoraSpec:
        lora, own = self.p.lora, getattr(self.section, "lora_dropout", None)
        return LoraSpec(int(lora.r), int(lora.alpha), float(lora.dropout if own is None else own),
                        list(lora.target_modules))


def fingerprint(run: TrainRun) -> str:
    """What a checkpoint was made from; a checkpoint with another fingerprint is never resumed."""
    p = run.p
    h = hashlib.sha256()
    keys = {"seed": p.seed, "system": p.prompt.system, "fields": list(p.schema.fields),
            "max_seq_length": p.base.max_seq_length,
            "lora": {k: getattr(p.lora, k) for k in ("r", "alpha", "dropout", "target_modules")},
            "train": {k: getattr(p.train, k) for k in TRAIN_KNOBS}}
    h.update(json.dumps([run.label, float(run.section.lr), run.steps, run.epochs,
                         getattr(run.section, "lora_dropout", None), run.global_batch, keys], sort_keys=True,
                        default=str).encode())
    for row in run.rows:
        h.update(row["id"].encode())
    for d in (run.base_dir, run.init_adapter):
        if d is not None:
            for f in sorted(Path(d).glob("*.safetensors")):
                h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _prepare_checkpoints(run: TrainRun) -> Path | None:
    """Return the last resumable checkpoint, wiping checkpoints made from anything else."""
    if run.checkpoint_dir is None:
        return None
    ckdir, stamp = run.checkpoint_dir, run.checkpoint_dir / "fingerprint.json"
    want = fingerprint(run)
    if ckdir.exists() and (not stamp.exists() or json.loads(stamp.read_text()).get("fingerprint") != want):
        if is_main_process():
            shutil.rmtree(ckdir)
    if is_main_process():
        ckdir.mkdir(parents=True, exist_ok=True)
        write_json(stamp, {"fingerprint": want})
    done = [p for p in ckdir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def _sort_target_modules(config_file: Path) -> None:
    """peft saves target_modules in set order (it changes with PYTHONHASHSEED): sorted, equal runs give equal bytes."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def logging_every(setting, steps: int) -> int:
    """train.logging_steps: 'auto' = about 100 curve points per run. A logged point is read back from the GPU,
    the one wait for it in a step: logging every step keeps a small model's GPU idle between steps."""
    return max(1, math.ceil(steps / 100)) if setting == "auto" else int(setting)


def answer_head(backend: str, tp) -> str | None:
    """The loss that runs the LM head on answer tokens only (jinmei.train.loss): train.loss_type chunked_nll or
    dft on Unsloth, whose own loss is nll over every position; the plain backend has TRL's own for both."""
    return tp.loss_type if backend == "unsloth" and tp.loss_type in ("chunked_nll", "dft") else None


def make_trainer(model, tokenizer, config, dataset, callbacks, answer_head_loss: str | None = None):
    """The stages' SFTTrainer, less per-batch costs of transformers' loop that change no result: two host reads,
    and with answer_head_loss (answer_head) the LM head's work on positions the loss ignores."""
    import torch
    from trl import SFTTrainer
    from transformers.trainer_callback import PrinterCallback

    head = AnswerHead.of(model, answer_head_loss) if answer_head_loss else None

    class Trainer(SFTTrainer):
        _tokens_pending = None

        def _track_num_input_tokens(self, inputs):
            """transformers reads the count back (.item()) every batch; here it stays on the device until a save
            or the end (flush_token_count), so the host never waits for the GPU in mid-step."""
            mask = inputs.get("attention_mask")
            count = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            count = self.accelerator.gather(count.to(self.args.device, torch.int64)).sum()
            self._tokens_pending = count if self._tokens_pending is None else self._tokens_pending + count

        def flush_token_count(self) -> int:
            if self._tokens_pending is not None:
                self.state.num_input_tokens_seen += int(self._tokens_pending)
                self._tokens_pending = None
            return int(self.state.num_input_tokens_seen)

        def _save_checkpoint(self, model, trial):
            self.flush_token_count()  # a resumed run starts from the count its checkpoint holds
            return super()._save_checkpoint(model, trial)

        def floating_point_ops(self, inputs):
            return 0  # transformers walks every module each batch for total_flos, which nothing here reads

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if head is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            if "answer_positions" not in inputs:  # never the full head in silence
                raise JinmeiError("a training batch came without answer positions: the trainer's collator was "
                                  "replaced after make_trainer; set train.loss_type: nll to train without them")
            return answer_only_loss(self, model, inputs, head, return_outputs, num_items_in_batch)

    trainer = Trainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # the rich bar and dvclive already report
    if head is not None:
        trainer.data_collator = AnswerPositions(trainer.data_collator)
    return trainer


def sft_config(tp, seed: int, backend: str, world: int, *, output_dir: Path | str, lr: float, steps: int,
               per_device: int, accum: int, save: bool, **overrides):
    """The TRL SFTConfig every training stage runs (tp: the train section); benchmarks pass explicit overrides."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type=tp.lr_scheduler,
        warmup_steps=float(tp.warmup_ratio),
        weight_decay=float(tp.weight_decay),
        max_grad_norm=float(tp.max_grad_norm),
        logging_steps=logging_every(tp.logging_steps, steps),
        logging_nan_inf_filter=False,  # a NaN loss is logged, and stops the run (_callbacks), not averaged away
        optim=tp.optim,
        save_strategy="steps" if save else "no",
        save_steps=int(tp.save_steps),
        save_total_limit=1,
        report_to=list(tp.report_to) or "none",      # dvclive and the rich bar: _callbacks, always
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        max_length=None,  # lengths were handled in encode_rows: nothing is cut behind our back
        packing=False,
        padding_free=False,
        train_sampling_strategy="group_by_length" if tp.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,  # keeps "length" for the sampler; the collator reads only ids and labels
        loss_type=tp.loss_type if backend == "hf" else "nll",  # Unsloth: chunked_nll and dft are answer_head's
        # GPU: rows are fetched and padded by two worker processes while the GPU runs the step before
        dataloader_num_workers=2 if on_gpu else 0,
        dataloader_persistent_workers=on_gpu,
        dataloader_pin_memory=on_gpu,
        include_num_input_tokens_seen="non_padding",
        gradient_checkpointing=False,  # set per layer on the model in add_lora (jinmei.train.memory)
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"sft_config: {sorted(unknown)} are not settings the stages make")
    return SFTConfig(**{**values, **overrides})


def train(run: TrainRun, out_dir: Path) -> dict[str, Any]:
    """Train one LoRA run and save the adapter atomically to out_dir; returns its metrics."""
    import torch
    from datasets import Dataset

    tp, seed = run.p.train, run.p.seed
    backend = choose_backend(tp.backend)
    world = world_size()
    global_batch = run.global_batch
    per_device = min(int(tp.per_device_batch), global_batch)
    accum = accumulation_steps(global_batch, per_device, world)
    lora = run.lora
    max_seq_length = int(run.p.base.max_seq_length)
    torch.manual_seed(seed)
    model, tokenizer = load_base(run.base_dir, backend, max_seq_length)
    if tokenizer.pad_token_id is None:
        raise JinmeiError(f"{run.base_dir}: tokenizer has no pad token; rebuild the base with `dvc repro base`")
    examples, lengths = encode_rows(run.rows, tokenizer, run.p.prompt.system, list(run.p.schema.fields),
                                    max_seq_length, tp.too_long)
    longest = max((len(e["input_ids"]) for e in examples), default=1)
    ckpt = checkpoint_plan(tp.gradient_checkpointing, model, backend, lora, per_device, longest)
    model = add_lora(model, backend, lora, seed, ckpt)
    if run.init_adapter is not None:
        load_adapter_weights(model, run.init_adapter)
    steps = run.steps if run.steps is not None else optimizer_steps(run.epochs, len(examples), global_batch)
    resume_from = _prepare_checkpoints(run)
    if is_main_process():
        print(f"[{run.label}] backend={backend} processes={world} examples={len(examples)} "
              f"(cut {lengths.cut}, skipped {lengths.skipped}) global_batch={global_batch} = "
              f"{per_device} x {accum} accumulation x {world} -> {steps} optimizer steps"
              + (f", resuming from {resume_from.name}" if resume_from else ""), flush=True)
        print(f"[{run.label}] {memory.describe(ckpt)}", flush=True)

    scratch_dir = out_dir.parent / f".{out_dir.name}-scratch"  # Trainer wants an output_dir even when it saves nothing
    config = sft_config(tp, seed, backend, world, output_dir=run.checkpoint_dir or scratch_dir,
                        lr=float(run.section.lr), steps=steps, per_device=per_device, accum=accum,
                        save=run.checkpoint_dir is not None)
    callback = _callbacks(run.live_dir, steps, run.label, resume=resume_from is not None)
    trainer = make_trainer(model, tokenizer, config, Dataset.from_list(examples), [callback],
                           answer_head(backend, tp))
    started = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - started
    # from the trainer's own history: after a resume it holds the steps before the kill too
    history = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    losses = [loss for _, loss in history]
    tokens = trainer.flush_token_count()
    metrics = {
        "backend": backend,
        "processes": world,
        "steps": int(trainer.state.global_step),
        "global_batch": global_batch,
        "examples_seen": int(trainer.state.global_step) * global_batch,
        "examples_available": len(examples),
        "examples_cut": lengths.cut,
        "examples_skipped": lengths.skipped,
        "supervised_token_share": round(lengths.supervised_tokens / max(1, lengths.tokens), 4),
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(losses[-1], 4) if losses else None,
        "min_loss": round(min(losses), 4) if losses else None,
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "gradient_checkpointing": ckpt.as_metrics(),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available()
        else None,
    }
    if is_main_process():
        with atomic_path(out_dir) as tmp:
            trainer.model.save_pretrained(str(tmp), safe_serialization=True)
            _sort_target_modules(tmp / "adapter_config.json")
        shutil.rmtree(scratch_dir, ignore_errors=True)
        if run.checkpoint_dir is not None:  # finished: checkpoints only ever serve a resume of this same run
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return {"metrics": metrics, "model": trainer.model, "tokenizer": tokenizer, "losses": history}


TRAIN_KNOBS = ("backend", "processes", "global_batch", "per_device_batch", "gradient_checkpointing", "too_long",
               "warmup_ratio", "lr_scheduler", "weight_decay", "max_grad_norm", "save_steps", "group_by_length",
               "loss_type", "optim")  # not logging_steps, report_to: they change what is reported, not the model


def run_mixture(p, label: str, *, base: Path, splits: Path, out: Path, checkpoints: Path, metrics: Path,
                live: Path, init_adapter: Path | None = None) -> None:
    """stage1 / stage2: draw the stage's mixture from the training pools, train, write adapter and metrics."""
    from jinmei.train.examples import draw_mixture, load_pools

    section = getattr(p, label)
    pos, empty = load_pools(splits)
    rows = draw_mixture(pos, empty, section.size, float(section.positive_ratio), random.Random(f"{p.seed}-{label}"),
                        label)
    result = train(TrainRun(label, p, section, rows, Path(base), init_adapter=init_adapter,
                            checkpoint_dir=checkpoints, live_dir=live), out)
    if is_main_process():
        n_pos = sum(1 for r in rows if r["output"]["persons"])
        write_json(metrics, {**result["metrics"], "mixture_size": len(rows),
                             "mixture_positive_share": round(n_pos / len(rows), 4),
                             "epochs": float(section.epochs), "lr": float(section.lr)})
