"""The training loop shared by sanity, stage1 and stage2: one recipe, two backends.

Examples are tokenized here (not by TRL) so that masking and length handling are identical on the
plain transformers+peft backend and on Unsloth: prompt tokens get label -100, every answer token
(the end-of-turn token included) keeps its id, and an over-long example is cut on the article side
or skipped, never cut in the answer.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.common import JinmeiError, atomic_path, read_jsonl, write_json
from stages.prompt import answer_text, messages

IGNORE = -100


# ---------------------------------------------------------------- data


@dataclass
class LengthReport:
    examples: int = 0
    cut: int = 0
    skipped: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def _chat_ids(tokenizer, conversation: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def encode_example(tokenizer, system: str, article: str, answer: str) -> tuple[list[int], list[int]]:
    """input_ids and labels for one article: labels are -100 on the prompt, the ids on the answer."""
    prompt = messages(system, article)
    prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
    full_ids = _chat_ids(tokenizer, prompt + [{"role": "assistant", "content": answer}], False)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise JinmeiError(
            "the chat template renders the prompt differently with and without the answer; "
            "masking would be wrong (check the base model's chat template)"
        )
    labels = [IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return full_ids, labels


def encode_rows(rows, tokenizer, system: str, fields: list[str], max_len: int, too_long: str):
    """Tokenize contract rows; handle the ones over max_len explicitly and count them."""
    if too_long not in ("skip", "cut_article"):
        raise JinmeiError(f"params.yaml: train.too_long must be 'skip' or 'cut_article', not {too_long!r}")
    report, examples = LengthReport(), []
    for row in rows:
        answer = answer_text(row["output"], fields)
        text = row["text"]
        input_ids, labels = encode_example(tokenizer, system, text, answer)
        if len(input_ids) > max_len and too_long == "cut_article":
            article_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = len(article_ids) - (len(input_ids) - max_len)
            while keep > 0 and len(input_ids) > max_len:
                text = tokenizer.decode(article_ids[:keep])
                input_ids, labels = encode_example(tokenizer, system, text, answer)
                keep -= max(1, len(input_ids) - max_len)
            report.cut += len(input_ids) <= max_len
        if len(input_ids) > max_len:
            report.skipped += 1
            report.skipped_ids.append(row["id"])
            continue
        report.examples += 1
        report.tokens += len(input_ids)
        report.supervised_tokens += sum(1 for x in labels if x != IGNORE)
        # length = the prompt's tokens only: grouping batches by a length that includes the answer sorts
        # positives (long answers) apart from empties (short ones), and training on one-class batches
        # ends "always positive" or "always empty" (docs/corpus.md "Length grouping")
        examples.append({"input_ids": input_ids, "labels": labels, "length": labels.count(IGNORE)})
    if not examples:
        raise JinmeiError(
            f"no training example fits base.max_seq_length={max_len}; raise base.max_seq_length "
            f"or set train.too_long: cut_article"
        )
    return examples, report


def draw_mixture(pos_rows, empty_rows, size: int | None, positive_ratio: float, rng: random.Random, key: str):
    """A shuffled mixture with the asked positive share; size None = the largest the pools allow."""
    if not 0.0 <= positive_ratio <= 1.0:
        raise JinmeiError(f"params.yaml: {key}.positive_ratio={positive_ratio} must lie in [0, 1]")
    if size is None:
        if positive_ratio in (0.0, 1.0):
            size = len(empty_rows) if positive_ratio == 0.0 else len(pos_rows)
        else:
            size = int(min(len(pos_rows) / positive_ratio, len(empty_rows) / (1 - positive_ratio)))
    n_pos = round(size * positive_ratio)
    n_empty = size - n_pos
    if n_pos > len(pos_rows) or n_empty > len(empty_rows):
        raise JinmeiError(
            f"params.yaml: {key}.size={size} at positive_ratio={positive_ratio} needs {n_pos} positives and "
            f"{n_empty} empties, the training pools hold {len(pos_rows)} and {len(empty_rows)}; "
            f"lower {key}.size (or null for the largest mixture) or supply a larger corpus"
        )
    mixture = rng.sample(pos_rows, n_pos) + rng.sample(empty_rows, n_empty)
    rng.shuffle(mixture)
    return mixture


def load_pools(splits_dir: Path):
    return read_jsonl(splits_dir / "train_positive.jsonl"), read_jsonl(splits_dir / "train_empty.jsonl")


# ---------------------------------------------------------------- batch geometry


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def accumulation_steps(global_batch: int, per_device: int, world: int) -> int:
    """Gradient accumulation that keeps the global batch fixed whatever the number of GPUs."""
    if global_batch <= 0 or per_device <= 0:
        raise JinmeiError("params.yaml: train.global_batch and train.per_device_batch must be positive")
    if global_batch % (per_device * world):
        raise JinmeiError(
            f"params.yaml: train.global_batch={global_batch} is not divisible by train.per_device_batch="
            f"{per_device} x {world} process(es); choose a per_device_batch with per_device_batch x {world} "
            f"dividing {global_batch}, or change train.global_batch"
        )
    return global_batch // (per_device * world)


def optimizer_steps(epochs: float, n_examples: int, global_batch: int) -> int:
    return max(1, math.ceil(epochs * n_examples / global_batch))


def maybe_launch_distributed(module: str, train_params: dict[str, Any], argv: list[str] | None) -> None:
    """With several GPUs (or train.processes > 1), re-run this stage as one process per device via torchrun."""
    if "LOCAL_RANK" in os.environ:
        return
    processes = train_params.get("processes", "auto")
    if processes == "auto":
        try:
            import torch

            processes = torch.cuda.device_count() if torch.cuda.is_available() else 1
        except ImportError:
            processes = 1
    processes = int(processes)
    if processes <= 1:
        return
    accumulation_steps(train_params["global_batch"], train_params["per_device_batch"], processes)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", module, *(sys.argv[1:] if argv is None else argv)]
    print(f"launching {processes} processes: {' '.join(cmd)}", flush=True)
    os.execv(sys.executable, cmd)


# ---------------------------------------------------------------- model


def choose_backend(name: str) -> str:
    if name not in ("auto", "hf", "unsloth"):
        raise JinmeiError(f"params.yaml: train.backend must be auto, hf or unsloth, not {name!r}")
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


def load_model(base_dir: Path, backend: str, lora: LoraSpec, max_seq_length: int, seed: int, grad_ckpt: bool):
    """Base model + a fresh LoRA adapter, on either backend, bf16 on GPU (never 4-bit)."""
    import torch

    on_gpu = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "unsloth":
        import unsloth  # noqa: F401  (must come before transformers/peft/trl are used)
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(base_dir), max_seq_length=max_seq_length, dtype=torch.bfloat16,
            load_in_4bit=False, load_in_8bit=False, full_finetuning=False,
            device_map={"": local_rank}, local_files_only=True,
        )
        model = FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, bias="none", random_state=seed,
            use_gradient_checkpointing="unsloth",
        )
        return model, tokenizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if on_gpu else torch.float32, "attn_implementation": "sdpa"}
    if on_gpu:
        kwargs["device_map"] = {"": local_rank}
    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, **kwargs)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config), tokenizer


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
        """dvclive curves per optimizer step and a rich progress bar on the terminal."""

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

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
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


@dataclass
class TrainJob:
    """Everything one training run needs; built by the sanity, stage1 and stage2 stages from params."""

    label: str
    base_dir: Path
    rows: list[dict[str, Any]]
    params: dict[str, Any]           # the whole params.yaml
    lr: float
    steps: int | None = None         # fixed optimizer steps (sanity) ...
    epochs: float | None = None      # ... or epochs over rows (stage1/stage2)
    lora_dropout: float | None = None
    init_adapter: Path | None = None  # stage2 continues stage1's adapter
    global_batch: int | None = None   # overrides train.global_batch (sanity overfits with small batches)
    checkpoint_dir: Path | None = None
    live_dir: Path | None = None


def fingerprint(job: TrainJob) -> str:
    """What a checkpoint was made from; a checkpoint with another fingerprint is never resumed."""
    h = hashlib.sha256()
    keys = {k: job.params.get(k) for k in ("seed", "base", "prompt", "schema", "lora", "train")}
    h.update(json.dumps([job.label, job.lr, job.steps, job.epochs, job.lora_dropout, job.global_batch, keys], sort_keys=True,
                        default=str).encode())
    for row in job.rows:
        h.update(row["id"].encode())
    for d in (job.base_dir, job.init_adapter):
        if d is not None:
            for f in sorted(Path(d).glob("*.safetensors")):
                h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _prepare_checkpoints(job: TrainJob) -> Path | None:
    """Return the last resumable checkpoint, wiping checkpoints made from anything else."""
    if job.checkpoint_dir is None:
        return None
    ckdir, stamp = job.checkpoint_dir, job.checkpoint_dir / "fingerprint.json"
    want = fingerprint(job)
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


def train(job: TrainJob, out_dir: Path) -> dict[str, Any]:
    """Train one LoRA run and save the adapter atomically to out_dir; returns its metrics."""
    import torch
    from datasets import Dataset

    p, tp = job.params, job.params["train"]
    seed = int(p["seed"])
    if job.lr <= 0:
        raise JinmeiError(f"params.yaml: {job.label}.lr={job.lr} must be positive")
    backend = choose_backend(tp["backend"])
    world = world_size()
    global_batch = int(job.global_batch or tp["global_batch"])
    per_device = min(int(tp["per_device_batch"]), global_batch)
    accum = accumulation_steps(global_batch, per_device, world)
    lora_p = p["lora"]
    lora = LoraSpec(int(lora_p["r"]), int(lora_p["alpha"]),
                    float(lora_p["dropout"] if job.lora_dropout is None else job.lora_dropout),
                    list(lora_p["target_modules"]))
    torch.manual_seed(seed)
    model, tokenizer = load_model(job.base_dir, backend, lora, int(p["base"]["max_seq_length"]), seed,
                                  bool(tp.get("gradient_checkpointing", False)))
    if job.init_adapter is not None:
        load_adapter_weights(model, job.init_adapter)
    if tokenizer.pad_token_id is None:
        raise JinmeiError(f"{job.base_dir}: tokenizer has no pad token; rebuild the base with `dvc repro base`")

    examples, lengths = encode_rows(job.rows, tokenizer, p["prompt"]["system"], p["schema"]["fields"],
                                    int(p["base"]["max_seq_length"]), tp.get("too_long", "skip"))
    steps = job.steps if job.steps is not None else optimizer_steps(job.epochs, len(examples), global_batch)
    resume_from = _prepare_checkpoints(job)
    if is_main_process():
        print(f"[{job.label}] backend={backend} processes={world} examples={len(examples)} "
              f"(cut {lengths.cut}, skipped {lengths.skipped}) global_batch={global_batch} = "
              f"{per_device} x {accum} accumulation x {world} -> {steps} optimizer steps"
              + (f", resuming from {resume_from.name}" if resume_from else ""), flush=True)

    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    scratch_dir = out_dir.parent / f".{out_dir.name}-scratch"  # Trainer wants an output_dir even when it saves nothing
    config = SFTConfig(
        output_dir=str(job.checkpoint_dir or scratch_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        max_steps=steps,
        learning_rate=job.lr,
        lr_scheduler_type=tp.get("lr_scheduler", "cosine"),
        warmup_steps=float(tp.get("warmup_ratio", 0.0)),
        weight_decay=float(tp.get("weight_decay", 0.0)),
        max_grad_norm=float(tp.get("max_grad_norm", 1.0)),
        logging_steps=1,
        save_strategy="steps" if job.checkpoint_dir else "no",
        save_steps=int(tp.get("save_steps", 50)),
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        max_length=None,  # lengths were handled in encode_rows: nothing is cut behind our back
        packing=False,
        padding_free=False,
        train_sampling_strategy="group_by_length" if tp.get("group_by_length", True) else "random",
        length_column_name="length",
        remove_unused_columns=False,  # keeps "length" for the sampler; the collator reads only ids and labels
        loss_type=tp.get("loss_type", "nll") if backend == "hf" else "nll",  # Unsloth fuses its own loss
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        gradient_checkpointing=False,  # set on the model in load_model (Unsloth manages its own)
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    callback = _callbacks(job.live_dir, steps, job.label, resume=resume_from is not None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, callbacks=[callback])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the rich bar and dvclive already report every step
    started = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - started
    # from the trainer's own history: after a resume it holds the steps before the kill too
    history = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    losses = [loss for _, loss in history]
    tokens = int(trainer.state.num_input_tokens_seen)
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
    }
    if is_main_process():
        with atomic_path(out_dir) as tmp:
            trainer.model.save_pretrained(str(tmp), safe_serialization=True)
            _sort_target_modules(tmp / "adapter_config.json")
        shutil.rmtree(scratch_dir, ignore_errors=True)
        if job.checkpoint_dir is not None:  # finished: checkpoints only ever serve a resume of this same run
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return {"metrics": metrics, "model": trainer.model, "tokenizer": tokenizer, "losses": history}


def greedy_answers(model, tokenizer, system: str, texts: list[str], max_new_tokens: int, batch: int = 8):
    """Greedy answers with transformers (sanity gate, and the unquantized side of eval's comparisons).

    Returns (answer, hit_limit) pairs: an answer that ran into max_new_tokens is flagged, never passed off
    as complete.
    """
    import torch

    model.eval()
    end_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id} - {None}
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(texts), batch):
        prompts = [tokenizer.apply_chat_template(messages(system, t), add_generation_prompt=True, tokenize=False)
                   for t in texts[start : start + batch]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=sorted(end_ids), pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            stop = next((i for i, tok in enumerate(row) if tok in end_ids), None)
            ids = row if stop is None else row[:stop]
            results.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), stop is None))
    return results


def mixture_stage(stage: str, argv, continues: bool, module: str) -> None:
    """stage1 and stage2: draw a mixture from the training pools, train, write adapter and metrics."""
    import argparse

    from stages.common import load_params, seed_everything, set_offline_env
    from stages.validate import validate

    ap = argparse.ArgumentParser(description=f"{stage}: LoRA training on a mixture of the training pools")
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    if continues:
        ap.add_argument("--init", type=Path, required=True, help="adapter to continue (stage1's)")
    else:
        ap.add_argument("--gate", type=Path, required=True, help="the sanity verdict")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live", type=Path, required=True)
    args = ap.parse_args(argv)

    set_offline_env()
    params = load_params()
    validate(params, stage, base_dir=args.base)
    sp = params[stage]
    if not continues and not (args.gate.exists() and json.loads(args.gate.read_text()).get("passed")):
        raise JinmeiError(f"{args.gate}: the sanity gate has not passed; run `dvc repro sanity` and fix it first")
    if float(sp["epochs"]) <= 0:
        raise JinmeiError(f"params.yaml: {stage}.epochs={sp['epochs']} must be positive")
    maybe_launch_distributed(module, params["train"], argv)
    seed = int(params["seed"])
    seed_everything(seed)
    pos, empty = load_pools(args.splits)
    rows = draw_mixture(pos, empty, sp.get("size"), float(sp["positive_ratio"]), random.Random(f"{seed}-{stage}"),
                        stage)
    result = train(TrainJob(label=stage, base_dir=args.base, rows=rows, params=params, lr=float(sp["lr"]),
                            epochs=float(sp["epochs"]), lora_dropout=sp.get("lora_dropout"),
                            init_adapter=args.init if continues else None, checkpoint_dir=args.checkpoints,
                            live_dir=args.live), args.out)
    if is_main_process():
        n_pos = sum(1 for r in rows if r["output"]["persons"])
        write_json(args.metrics, {**result["metrics"], "mixture_size": len(rows),
                                  "mixture_positive_share": round(n_pos / len(rows), 4),
                                  "epochs": float(sp["epochs"]), "lr": float(sp["lr"])})
