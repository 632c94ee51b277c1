"""Reliability: params checked before heavy work, outputs that survive SIGKILL, resumable training,
deterministic reruns, no network, safe weight loading, disk checks. RELIABILITY.md summarises the outcomes.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import tiny_repo
from tiny_repo import ROOT, STAGES, Run, dvc, ran, read_json, without_timing

from stages.common import JinmeiError, load_params
from stages.validate import SCHEMA, check_sequence_budget, minimal_example_tokens, quant_type_names, validate


# ================================================================ 1. params validation (fast)


def with_change(params: dict, key: str, value) -> dict:
    """A copy of params with section.key set to value (value DELETE removes it)."""
    changed = copy.deepcopy(params)
    *path, last = key.split(".")
    node = changed
    for part in path:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return changed


DELETE = object()


@pytest.mark.parametrize("path", ["params.yaml", "profiles/production.yaml"])
@pytest.mark.parametrize("stage", STAGES)
def test_committed_params_are_valid(path, stage, monkeypatch):
    monkeypatch.setenv("JINMEI_ALLOW_HUB", "1")  # the production base model is a hub id, not cached here
    validate(load_params(ROOT / path), stage)


def test_tiny_params_are_valid(params):
    validate(tiny_repo.deep_merge(params, tiny_repo.TINY_PARAMS), "demo")


# (key, bad value, stage that must refuse it, words the message must contain)
BAD_VALUES = [
    ("stage2.lr", -1e-4, "stage2", "params.yaml stage2.lr=-0.0001: must be a positive number"),
    ("stage2.lr", 0, "stage2", "stage2.lr=0: must be a positive number"),
    ("stage2.lr", "fast", "stage2", "stage2.lr='fast': must be a positive number"),
    ("stage1.lr", float("nan"), "stage1", "stage1.lr=nan: must be a positive number"),
    ("sanity.lr", -1, "sanity", "sanity.lr=-1: must be a positive number"),
    ("stage1.epochs", 0, "stage1", "stage1.epochs=0: must be a positive number"),
    ("stage2.epochs", -0.5, "stage2", "stage2.epochs=-0.5: must be a positive number"),
    ("sanity.steps", 0, "sanity", "sanity.steps=0: must be a positive integer"),
    ("sanity.steps", 2.5, "sanity", "sanity.steps=2.5: must be a positive integer"),
    ("sanity.global_batch", 0, "sanity", "sanity.global_batch=0: must be a positive integer"),
    ("train.save_steps", 0, "stage1", "train.save_steps=0: must be a positive integer"),
    ("stage1.size", 0, "stage1", "stage1.size=0: must be a positive integer"),
    ("stage2.size", -5, "stage2", "stage2.size=-5: must be a positive integer"),
    ("split.dev_all_size", 0, "split", "split.dev_all_size=0: must be a positive integer"),
    ("split.sanity_size", -1, "split", "split.sanity_size=-1: must be a positive integer"),
    ("demo.n_articles", 0, "demo", "demo.n_articles=0: must be a positive integer"),
    ("base.max_seq_length", 0, "sanity", "base.max_seq_length=0: must be a positive integer"),
    ("lora.r", 0, "sanity", "lora.r=0: must be a positive integer"),
    ("eval.max_new_tokens", 0, "eval", "eval.max_new_tokens=0: must be a positive integer"),
    ("eval.compare_subset", -1, "eval", "eval.compare_subset=-1: must be an integer >= 0"),
    ("stage1.positive_ratio", 1.5, "stage1", "stage1.positive_ratio=1.5: must be a number in [0, 1]"),
    ("stage2.positive_ratio", -0.1, "stage2", "stage2.positive_ratio=-0.1: must be a number in [0, 1]"),
    ("split.dev_all_positive_share", 2, "split", "split.dev_all_positive_share=2: must be a number in [0, 1]"),
    ("demo.positive_share", 1.1, "demo", "demo.positive_share=1.1: must be a number in [0, 1]"),
    ("train.warmup_ratio", 1.2, "stage1", "train.warmup_ratio=1.2: must be a number in [0, 1]"),
    ("eval.min_parse_rate", 95, "eval", "eval.min_parse_rate=95: must be a number in [0, 1]"),
    ("sanity.min_exact_match", 1.01, "sanity", "sanity.min_exact_match=1.01: must be a number in [0, 1]"),
    ("lora.dropout", 1.0, "stage1", "lora.dropout=1.0: must be a number in [0, 1)"),
    ("stage1.lora_dropout", -0.1, "stage1", "stage1.lora_dropout=-0.1: must be a number in [0, 1)"),
    ("train.backend", "deepspeed", "stage1", "train.backend='deepspeed': must be one of auto, hf, unsloth"),
    ("train.too_long", "truncate", "stage1", "train.too_long='truncate': must be one of cut_article, skip"),
    ("train.loss_type", "mse", "stage1", "train.loss_type='mse': must be one of nll, chunked_nll, dft"),
    ("train.processes", 0, "stage1", "train.processes=0: must be 'auto' or a positive integer"),
    ("train.lr_scheduler", "cosin", "stage1", "train.lr_scheduler='cosin': unknown scheduler; valid: linear, cosine"),
    ("train.gradient_checkpointing", "yes", "stage1", "train.gradient_checkpointing='yes': must be true or false"),
    ("base.save_dtype", "fp16", "base", "base.save_dtype='fp16': must be one of float32, bfloat16, float16"),
    ("merge.dtype", "fp8", "merge", "merge.dtype='fp8': must be one of auto, float32, bfloat16, float16"),
    ("quantize.type", "Q4_K_X", "quantize", "quantize.type='Q4_K_X': unknown llama.cpp type; valid: "),
    ("quantize.name", "my model", "quantize", "quantize.name='my model': must be letters, digits"),
    ("eval.grammar", "on", "eval", "eval.grammar='on': must be true or false"),
    ("eval.n_batch", 0, "eval", "eval.n_batch=0: must be a positive integer"),
    ("schema.fields", [], "demo", "schema.fields=[]: must be a non-empty list of names"),
    ("schema.fields", ["name", "act", "name"], "split", "schema.fields=['name', 'act', 'name']: lists a name twice"),
    ("base.tiny", 64, "base", "base.tiny=64: must be a mapping"),
    ("lora.target_modules", "q_proj", "stage1", "lora.target_modules='q_proj': must be a non-empty list of names"),
    ("prompt.system", "  ", "quantize", "prompt.system='  ': must be a non-empty string"),
    ("seed", "abc", "demo", "params.yaml seed='abc': must be an integer"),
    ("demo.min_chars", 10_000, "demo", "demo.min_chars=10000: is above demo.max_chars="),
    ("eval.max_new_tokens", 4096, "eval", "eval.max_new_tokens=4096: leaves no room for the prompt in eval.n_ctx"),
]


@pytest.mark.parametrize("key,value,stage,message", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _, _ in BAD_VALUES])
def test_bad_value_is_refused_naming_the_key(params, key, value, stage, message):
    with pytest.raises(JinmeiError) as err:
        validate(with_change(params, key, value), stage)
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml ")


def test_every_schema_key_has_a_bad_value_test():
    tested = {key for key, *_ in BAD_VALUES}
    untested = {f"{s}.{k}" for s, spec in SCHEMA.items() if isinstance(spec, dict) for k in spec} - tested
    # keys whose only wrong value is a missing / wrong-typed one (covered by the generic tests below)
    covered_elsewhere = {"corpus.path", "base.model", "base.trust_remote_code", "base.tiny", "lora.alpha",
                         "train.global_batch", "train.per_device_batch", "train.weight_decay", "train.max_grad_norm",
                         "train.group_by_length", "sanity.min_loss_ratio", "sanity.max_new_tokens", "demo.max_chars",
                         "split.dev_positive_size", "stage2.lora_dropout", "quantize.keep_f16", "eval.n_ctx",
                         "eval.n_threads", "eval.workers", "eval.recall_drop_margin", "eval.quant_drop_margin",
                         "eval.max_false_positive_rate", "eval.batch_size"}
    assert untested <= covered_elsewhere, sorted(untested - covered_elsewhere)


def test_exponent_strings_from_dvc_exp_run_are_numbers(params, tmp_path):
    """`dvc exp run -S stage2.lr=5e-5` writes `lr: 5e-05`, a string to plain PyYAML (YAML 1.1): every stage must
    read a number, or the advice's arithmetic (lr / 2) crashed eval at the end of the user's experiment."""
    from stages.advice import advise
    from stages.common import load_params

    text = yaml.safe_dump(params, sort_keys=False)
    text = re.sub(r"(?m)^(stage2:\n(?:  .*\n)*?  lr: ).*$", r"\g<1>5e-05", text)
    text += "extra_check: 1e3\n"
    assert yaml.safe_load(text)["stage2"]["lr"] == "5e-05"  # the trap
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    loaded = load_params(tmp_path / "params.yaml")
    assert loaded["stage2"]["lr"] == 5e-05 and isinstance(loaded["stage2"]["lr"], float)
    assert loaded["extra_check"] == 1000.0 and loaded["seed"] == params["seed"]  # ints stay ints
    assert isinstance(loaded["seed"], int) and loaded["schema"]["fields"] == params["schema"]["fields"]
    del loaded["extra_check"]
    validate(loaded, "stage2")
    metrics = {"dev_positive": {"recall": 0.2}, "dev_all": {"false_positive_rate": 0.0, "schema_valid_rate": 1.0},
               "compare": {"n": 20, "stage1": {"recall": 0.9}, "merged": {"recall": 0.2}, "gguf": {"recall": 0.2}}}
    assert "stage2.lr=2.5e-05" in advise(metrics, loaded)


def test_sanity_global_batch_must_divide(params):
    changed = with_change(params, "sanity.global_batch", 6)
    changed["train"]["per_device_batch"] = 4
    with pytest.raises(JinmeiError, match=r"sanity.global_batch=6: not divisible by train.per_device_batch=4 x 1"):
        validate(changed, "sanity")
    validate(with_change(changed, "sanity.global_batch", 2), "sanity")  # per-device batch = min(4, 2)
    validate(with_change(changed, "sanity.global_batch", None), "sanity")


@pytest.mark.parametrize("global_batch,per_device,processes,fits", [
    (10, 4, 1, "1, 2, 5, 10"), (8, 4, 3, "none"), (8, 2, 3, "none"), (12, 4, 2, "1, 2, 3, 6")])
def test_global_batch_must_divide(params, global_batch, per_device, processes, fits):
    changed = with_change(params, "train.global_batch", global_batch)
    changed["train"]["per_device_batch"] = per_device
    changed["train"]["processes"] = processes
    with pytest.raises(JinmeiError) as err:
        validate(changed, "stage1")
    assert (f"train.global_batch={global_batch}: not divisible by train.per_device_batch={per_device} x "
            f"{processes} process(es); per_device_batch could be {fits}") in str(err.value)


def test_quantize_types_come_from_llama_cpp():
    names = quant_type_names()
    assert {"Q4_K_M", "Q8_0", "F16", "Q5_K_M", "F32"} <= set(names)
    assert "Q4_K_X" not in names


def test_quantize_type_is_case_insensitive_like_the_stage(params):
    validate(with_change(params, "quantize.type", "q8_0"), "quantize")


@pytest.mark.parametrize("key,suggestion", [("stage2.lrr", "did you mean 'stage2.lr'?"),
                                            ("train.per_device_batch_size", "did you mean 'train.per_device_batch'?"),
                                            ("eval.grammer", "did you mean 'eval.grammar'?"),
                                            ("lora.alpah", "did you mean 'lora.alpha'?")])
def test_typo_in_a_key_is_refused_with_a_suggestion(params, key, suggestion):
    changed = with_change(params, key, 1)
    with pytest.raises(JinmeiError) as err:
        validate(changed, "eval")  # wherever the typo is, every stage refuses it
    assert f"params.yaml {key}: unknown key; {suggestion}" in str(err.value)


def test_unknown_section_is_refused(params):
    with pytest.raises(JinmeiError, match=r"params.yaml evl: unknown key; did you mean 'eval'\?"):
        validate({**params, "evl": {"grammar": True}}, "demo")


def test_missing_key_and_missing_section(params):
    with pytest.raises(JinmeiError, match=r"params.yaml stage2.lr: missing; add it to the 'stage2' section"):
        validate(with_change(params, "stage2.lr", DELETE), "stage2")
    without_eval = {k: v for k, v in params.items() if k != "eval"}
    with pytest.raises(JinmeiError, match=r"params.yaml: section 'eval' is missing"):
        validate(without_eval, "eval")  # a later stage's section is required where it is read


def test_malformed_file_shapes(params):
    with pytest.raises(JinmeiError, match=r"params.yaml: must be a mapping of sections"):
        validate(["seed", 1], "demo")
    with pytest.raises(JinmeiError, match=r"params.yaml stage2=0.0005: must be a section \(a mapping of keys\)"):
        validate({**params, "stage2": 0.0005}, "demo")
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        validate(params, "train")


def test_quantize_without_llama_cpp(params, monkeypatch):
    """Training machines may lack llama-cpp-python: only the quantize stage itself insists on it."""
    import stages.validate as v

    monkeypatch.setattr(v, "quant_type_names", lambda: None)
    validate(params, "stage1")
    with pytest.raises(JinmeiError, match=r"quantize: llama-cpp-python is not installed"):
        validate(params, "quantize")


def test_optional_keys_may_be_absent(params):
    changed = with_change(params, "train.loss_type", DELETE) if "loss_type" in params["train"] else params
    validate(changed, "stage1")  # train.processes, train.loss_type, stage2.lora_dropout are read with defaults


def test_a_stage_checks_later_stages_keys_but_not_earlier_ones(params):
    """A bad eval key stops stage1 (before training); a bad demo key does not block eval."""
    with pytest.raises(JinmeiError, match="eval.max_new_tokens"):
        validate(with_change(params, "eval.max_new_tokens", 0), "stage1")
    validate(with_change(params, "demo.n_articles", 0), "eval")
    validate(with_change(params, "sanity.steps", 0), "stage1")


def test_base_model_missing_offline(params, monkeypatch, tmp_path):
    monkeypatch.delenv("JINMEI_ALLOW_HUB", raising=False)
    cases = [
        (str(tmp_path / "no-such-folder"), "folder"),
        (str(tmp_path), "has no config.json; point it at a Hugging Face model folder"),
        ("jinmei-tests/not-a-cached-model", "neither a local folder nor in the Hugging Face cache, and stages run "
                                            "offline. Fix: run `hf download jinmei-tests/not-a-cached-model`"),
        ("bundled:llama-7b", "unknown bundled model 'bundled:llama-7b'"),
    ]
    for spec, words in cases:
        with pytest.raises(JinmeiError) as err:
            validate(with_change(params, "base.model", spec), "base")
        assert "base.model" in str(err.value) and words in str(err.value), str(err.value)


def test_base_model_that_is_available_offline(params, tiny_base, monkeypatch):
    monkeypatch.delenv("JINMEI_ALLOW_HUB", raising=False)
    for spec in ("tiny-random", "bundled:smollm2-135m-instruct", str(tiny_base)):
        validate(with_change(params, "base.model", spec), "base")
    monkeypatch.setenv("JINMEI_ALLOW_HUB", "1")
    validate(with_change(params, "base.model", "jinmei-tests/not-a-cached-model"), "base")


def test_max_seq_length_too_small_for_a_minimal_example(params, tiny_base):
    from transformers import AutoTokenizer

    need = minimal_example_tokens(AutoTokenizer.from_pretrained(tiny_base), params)
    assert 60 < need < 300, need  # system prompt + template + one-line article + one-person answer
    with pytest.raises(JinmeiError) as err:
        validate(with_change(params, "base.max_seq_length", need - 1), "stage1", base_dir=tiny_base)
    assert (f"params.yaml base.max_seq_length={need - 1}: too small: the system prompt, a one-line article and a "
            f"one-person answer already take {need} tokens") in str(err.value)
    validate(with_change(params, "base.max_seq_length", need), "stage1", base_dir=tiny_base)
    assert check_sequence_budget(params, AutoTokenizer.from_pretrained(tiny_base)) == need


def test_validate_cli_reports_one_line(tmp_path):
    bad = load_params(ROOT / "params.yaml")
    bad["stage2"]["lrr"] = 1e-4
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(bad))
    done = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "JINMEI_PARAMS": str(params_file)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: params.yaml stage2.lrr: unknown key; did you mean 'stage2.lr'? known here: size, positive_ratio, "
        "epochs, lr, lora_dropout (a key the recipe does not read would be ignored silently; if you added it to a "
        "stage, add it to stages/validate.py SCHEMA)"]
    ok = subprocess.run([sys.executable, "-m", "stages.validate"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout


VALIDATED_STAGES = {  # stage -> module whose main() must call validate(params, "<stage>")
    "demo": "stages/demo.py", "split": "stages/split.py", "base": "stages/base.py", "sanity": "stages/sanity.py",
    "stage1": "stages/train.py", "stage2": "stages/train.py", "merge": "stages/merge.py",
    "quantize": "stages/quantize.py", "eval": "stages/eval.py"}


def test_every_stage_calls_validate():
    missing = [stage for stage, module in VALIDATED_STAGES.items()
               if "validate(" not in (ROOT / module).read_text(encoding="utf-8")]
    assert not missing, missing


# ================================================================ shared checks for the end-to-end runs


def check_outputs_intact(repo: Path) -> dict[str, int]:
    """Every output the pipeline wrote reads back whole: JSON(L) parses, safetensors and GGUF load."""
    from gguf import GGUFReader
    from safetensors import safe_open

    counts = {"jsonl": 0, "json": 0, "safetensors": 0, "gguf": 0}
    for path in sorted([*repo.glob("data/**/*.jsonl")]):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                assert line.endswith("\n"), f"{path}:{n}: last line cut short"
                json.loads(line)
        counts["jsonl"] += 1
    for path in sorted([*repo.glob("metrics/**/*.json"), *repo.glob("data/gates/*.json"),
                        *repo.glob("models/**/*.json")]):
        json.loads(path.read_text(encoding="utf-8"))
        counts["json"] += 1
    for path in sorted(repo.glob("models/**/*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                f.get_tensor(name)
        counts["safetensors"] += 1
    for path in sorted(repo.glob("models/**/*.gguf")):
        reader = GGUFReader(path)
        assert reader.tensors and all(t.data.size for t in reader.tensors), path
        counts["gguf"] += 1
    assert counts["jsonl"] >= 8 and counts["safetensors"] >= 5 and counts["gguf"] == 1, counts
    return counts


def temp_leftovers(repo: Path) -> list[str]:
    """atomic_path's temporary siblings (.<name>.<random>) that a killed stage could not remove."""
    return sorted(str(p.relative_to(repo)) for top in ("data", "models", "metrics") for p in (repo / top).rglob(".*")
                  if p.is_dir() and not p.name.startswith(".dvc"))


LOSS_KEYS = {"first_loss", "last_loss", "min_loss"}


def differences(repo: Path, baseline: Path, ignore: set[str] = frozenset()) -> list[str]:
    """What differs from the baseline run: split files byte for byte, metrics except wall-clock timings."""
    found = []
    for rel in ["data/demo/corpus.jsonl", *sorted(str(p.relative_to(baseline)) for p in baseline.glob("data/splits/*.jsonl")),
                *sorted(str(p.relative_to(baseline)) for p in baseline.glob("data/predictions/*.jsonl"))]:
        if (repo / rel).read_bytes() != (baseline / rel).read_bytes():
            found.append(f"{rel}: bytes differ")
    for rel in ("split", "sanity", "stage1", "stage2", "quantize", "eval"):
        path = f"metrics/{rel}.json"
        a, b = without_timing(read_json(repo / path)), without_timing(read_json(baseline / path))
        for key in ignore:
            a.pop(key, None), b.pop(key, None)
        if rel == "quantize":
            a.pop("fallbacks", None), b.pop("fallbacks", None)  # log text order is llama.cpp's, not ours
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            found.append(f"{path}: {', '.join(f'{k}: {b.get(k)!r} -> {a.get(k)!r}' for k in keys)}")
    return found


# ================================================================ 3. SIGKILL at random points, then `dvc repro`

KILL_SEED = 1124


def kill_plan(stage_seconds: dict[str, float], seed: int = KILL_SEED, kills: int = 3) -> list[tuple[str, float]]:
    """Seeded: three distinct stages in pipeline order, each killed 20-90% into its baseline duration."""
    rng = random.Random(seed)
    candidates = [s for s in STAGES if stage_seconds.get(s, 0) >= 2]
    chosen = sorted(rng.sample(candidates, kills), key=STAGES.index)
    return [(stage, round(rng.uniform(0.2, 0.9) * stage_seconds[stage], 2)) for stage in chosen]


@pytest.mark.slow
def test_sigkill_at_random_points_then_repro_gives_the_same_results(tmp_path_factory):
    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.make_repo(tmp_path_factory.mktemp("killed") / "repo")
    plan = kill_plan(built.run.stage_seconds())
    log = []
    for stage, delay in plan:
        run = Run(repo, ("repro",))
        run.wait_for(f"Running stage '{stage}'")
        time.sleep(delay)
        alive = run.proc.poll() is None
        run.kill()
        log.append(f"killed in {stage} after {delay} s" if alive else f"{stage} ended before the kill")
    final = Run(repo, ("repro",))
    assert final.wait() == 0, final.output[-4000:]
    print(f"\nkill plan {plan}: {log}; rerun ran {ran(final.output)} in {final.lines[-1][0]:.0f} s")
    print(f"temporary leftovers after the kills: {temp_leftovers(repo)}")
    assert "Data and pipelines are up to date." in dvc(repo, "status")
    check_outputs_intact(repo)
    # losses: a stage1/2 resumed from a checkpoint reports the losses since the resume (see the resume test)
    assert differences(repo, built.repo, ignore=LOSS_KEYS) == []


def test_atomic_path_leaves_nothing_when_killed(tmp_path):
    """A stage killed inside atomic_path leaves the old output (or none), never a partial one."""
    final = tmp_path / "out" / "weights.bin"
    final.parent.mkdir()
    final.write_bytes(b"old")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        from stages.common import atomic_path
        with atomic_path({str(final)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert final.read_bytes() == b"old"


def test_atomic_path_removes_what_a_killed_writer_left(tmp_path):
    from stages.common import write_json

    final = tmp_path / "out" / "model"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from stages.common import atomic_path
        with atomic_path({str(final)!r}) as tmp:
            tmp.mkdir()
            (tmp / "part.safetensors").write_bytes(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    write_json(final, {"ok": True})  # the rerun writes the same output
    assert sorted(p.name for p in final.parent.iterdir()) == ["model"]


# ================================================================ resume after a kill


def wait_for_checkpoint(folder: Path, run: Run, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if done:
            return max(done, key=lambda p: int(p.name.split("-")[1]))
        assert run.proc.poll() is None, f"dvc ended before any checkpoint:\n{run.output[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint in {folder} within {timeout} s")


RESUME_PARAMS = {"stage1": {"epochs": 4}}  # 8 examples / global batch 4 x 4 epochs = 8 optimizer steps


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """stage1 killed after its first checkpoint, then rerun; and the same stage1 run without a kill."""
    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.clone(built.repo, tmp_path_factory.mktemp("resume") / "repo")
    tiny_repo.write_params(repo, RESUME_PARAMS)
    run = Run(repo, ("repro", "stage1"))
    checkpoint = wait_for_checkpoint(repo / "models/checkpoints/stage1", run)
    run.kill()
    killed_before_end = not (repo / "metrics/stage1.json").exists()
    rerun = Run(repo, ("repro", "stage1"))
    assert rerun.wait() == 0, rerun.output[-4000:]
    straight = tiny_repo.clone(built.repo, tmp_path_factory.mktemp("straight") / "repo")
    tiny_repo.write_params(straight, RESUME_PARAMS)
    dvc(straight, "repro", "stage1")
    return {"repo": repo, "straight": straight, "checkpoint": checkpoint.name, "rerun": rerun.output,
            "killed_before_end": killed_before_end}


@pytest.mark.slow
def test_killed_stage1_resumes_from_its_checkpoint(resumed):
    assert resumed["killed_before_end"], "stage1 finished before the kill; raise RESUME_PARAMS epochs"
    match = re.search(r"resuming from (checkpoint-\d+)", resumed["rerun"])
    assert match, resumed["rerun"][-3000:]
    assert int(match.group(1).split("-")[1]) >= int(resumed["checkpoint"].split("-")[1])
    metrics = read_json(resumed["repo"] / "metrics/stage1.json")
    assert metrics["steps"] == read_json(resumed["straight"] / "metrics/stage1.json")["steps"] == 8
    assert not list((resumed["repo"] / "models/checkpoints/stage1").glob("checkpoint-*"))  # cleaned when done


@pytest.mark.slow
def test_resumed_training_gives_the_same_adapter(resumed):
    import torch
    from safetensors.torch import load_file

    weights = "models/stage1/adapter_model.safetensors"
    a, b = load_file(str(resumed["repo"] / weights)), load_file(str(resumed["straight"] / weights))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    worst = max((float((a[k] - b[k]).abs().max()) for k in different), default=0.0)
    assert worst <= 1e-6, f"{len(different)} of {len(a)} tensors differ, by up to {worst}"


@pytest.mark.slow
def test_resumed_training_reports_the_same_losses(resumed):
    a = read_json(resumed["repo"] / "metrics/stage1.json")
    b = read_json(resumed["straight"] / "metrics/stage1.json")
    assert {k: a[k] for k in LOSS_KEYS} == {k: b[k] for k in LOSS_KEYS}


# ================================================================ 4 + 5. a second clean run, with the network impossible

NETWORK_GUARD = '''
"""Test-only: every Python process of the run refuses non-local connections and logs who tried."""
import os, socket, traceback

_log = os.environ["JINMEI_NET_LOG"]
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
_LOCAL = ("127.0.0.1", "::1", "localhost", "")


def _note(what):
    with open(_log, "a", encoding="utf-8") as f:
        f.write(f"pid {os.getpid()} {what}\\n" + "".join(traceback.format_stack(limit=8)) + "\\n")


def _refuse(sock, address):
    if sock.family == socket.AF_UNIX or (isinstance(address, tuple) and address[0] in _LOCAL):
        return False
    _note(f"connect {address!r}")
    return True


def connect(self, address):
    if _refuse(self, address):
        raise OSError(101, "network disabled by the jinmei offline test")
    return _connect(self, address)


def connect_ex(self, address):
    if _refuse(self, address):
        return 101
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL and host is not None:
        _note(f"getaddrinfo {host!r}")
        raise socket.gaierror(-3, "network disabled by the jinmei offline test")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


def network_namespace() -> tuple[str, ...]:
    """`unshare -rn` (no network interface but loopback) where user namespaces are allowed, else nothing."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ("unshare", "-rn")
    return ()


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    built = tiny_repo.session_repo(tmp_path_factory)
    root = tmp_path_factory.mktemp("offline")
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    net_log = root / "network-attempts.log"
    net_log.touch()
    repo = tiny_repo.make_repo(root / "repo")
    prefix = network_namespace()
    extra = {"JINMEI_NET_LOG": str(net_log),
             "PYTHONPATH": os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))}
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        extra[key] = ""  # the stages must set these themselves (conftest sets them for the test process)
    run = Run(repo, ("repro",), prefix=prefix, extra_env=extra)
    code = run.wait()
    return {"repo": repo, "baseline": built.repo, "code": code, "output": run.output, "prefix": prefix,
            "attempts": net_log.read_text(), "seconds": run.lines[-1][0] if run.lines else None}


@pytest.mark.slow
def test_pipeline_runs_with_the_network_impossible(offline_run):
    print(f"\noffline run ({' '.join(offline_run['prefix']) or 'socket guard only'}): "
          f"{offline_run['seconds']:.0f} s")
    assert offline_run["code"] == 0, offline_run["output"][-4000:]
    assert ran(offline_run["output"]) == list(STAGES)
    assert offline_run["attempts"] == "", offline_run["attempts"][:4000]


@pytest.mark.slow
def test_two_clean_runs_give_identical_splits_and_metrics(offline_run):
    """Same params and seed, fresh repositories: byte-identical splits and predictions, equal metrics."""
    assert offline_run["code"] == 0
    assert differences(offline_run["repo"], offline_run["baseline"]) == []


def _model_files(repo: Path, suffixes: tuple[str, ...] | None) -> list[str]:
    return sorted(str(p.relative_to(repo)) for p in repo.glob("models/**/*") if p.is_file()
                  and "checkpoints" not in p.parts and (suffixes is None or p.suffix in suffixes))


@pytest.mark.slow
def test_two_clean_runs_give_identical_weights(offline_run):
    """Not only the metrics: adapters, merged weights and the GGUF are the same bytes."""
    assert offline_run["code"] == 0
    repo, baseline = offline_run["repo"], offline_run["baseline"]
    files = _model_files(baseline, (".safetensors", ".gguf"))
    assert len(files) >= 6, files
    assert [rel for rel in files if (repo / rel).read_bytes() != (baseline / rel).read_bytes()] == []


@pytest.mark.slow
def test_two_clean_runs_give_byte_identical_model_folders(offline_run):
    assert offline_run["code"] == 0
    repo, baseline = offline_run["repo"], offline_run["baseline"]
    files = _model_files(baseline, None)
    assert [rel for rel in files if (repo / rel).read_bytes() != (baseline / rel).read_bytes()] == []


# ================================================================ 5. offline, remote code, safe weights (static)

MODEL_STAGES = {"base": "stages/base.py", "sanity": "stages/sanity.py", "stage1/stage2": "stages/train.py",
                "merge": "stages/merge.py", "quantize": "stages/quantize.py", "eval": "stages/eval.py"}


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("stage,module", MODEL_STAGES.items())
def test_model_stages_turn_the_hub_off_first(stage, module):
    """set_offline_env() is called in the stage's entry point, before params are read or a model is loaded."""
    functions = _functions(ROOT / module)
    entry = functions["mixture_stage"] if stage == "stage1/stage2" else functions["main"]
    calls = [n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
             for n in ast.walk(entry) if isinstance(n, ast.Call)]
    assert "set_offline_env" in calls, f"{module}: {entry.name}() never calls set_offline_env()"
    assert calls.index("set_offline_env") < calls.index("load_params"), module


def test_set_offline_env_sets_the_hub_switches():
    code = ("import os; from stages.common import set_offline_env; set_offline_env(); "
            "print([os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE')])")
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE") and k != "JINMEI_ALLOW_HUB"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert done.stdout.strip() == "['1', '1', '1']", done.stderr


def stage_sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "stages").glob("*.py"))}


def test_no_pickle_loading_in_stages():
    for name, source in stage_sources().items():
        for pattern in (r"\btorch\.load\(", r"\bpickle\b", r"weights_only\s*=\s*False", r"\bjoblib\b", r"\bdill\b"):
            assert not re.search(pattern, source), f"stages/{name}: {pattern}"


def test_trust_remote_code_only_from_params():
    """No stage hard-codes trust_remote_code=True; the one that passes it takes base.trust_remote_code."""
    for name, source in stage_sources().items():
        for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)):
            for kw in call.keywords:
                if kw.arg == "trust_remote_code":
                    assert not (isinstance(kw.value, ast.Constant) and kw.value.value is True), f"stages/{name}"
    assert load_params(ROOT / "params.yaml")["base"]["trust_remote_code"] is False
    assert load_params(ROOT / "profiles/production.yaml")["base"]["trust_remote_code"] is False


@pytest.mark.slow
def test_saved_models_are_safetensors_only(tmp_path_factory):
    built = tiny_repo.session_repo(tmp_path_factory)
    pickled = [str(p.relative_to(built.repo)) for p in built.repo.glob("models/**/*")
               if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt") and "checkpoints" not in p.parts]
    assert pickled == []


def test_base_refuses_a_pickled_model_folder(tiny_base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from stages.base import _from_pretrained

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(JinmeiError):
        _from_pretrained(str(folder), trust_remote_code=False)


# ================================================================ 6. disk space checked before writing


def fake_disk(free_bytes: int):
    def usage(path):
        return shutil._ntuple_diskusage(10 * free_bytes, 9 * free_bytes, free_bytes)
    return usage


def test_quantize_refuses_before_writing_when_the_disk_is_full(tiny_base, tmp_path, monkeypatch, params):
    from stages import quantize

    monkeypatch.setattr(quantize.shutil, "disk_usage", fake_disk(1_000_000))
    out = tmp_path / "gguf"
    with pytest.raises(JinmeiError, match=r" free, the export needs up to .*; free some disk space"):
        quantize.export(tiny_base, out, "Q4_K_M", "jinmei", params["prompt"]["system"])
    assert not out.exists()


@pytest.fixture
def tiny_adapter(tiny_base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_merge_refuses_before_writing_when_the_disk_is_full(tiny_base, tiny_adapter, tmp_path, monkeypatch):
    import stages.merge as merge_mod

    monkeypatch.setattr(shutil, "disk_usage", fake_disk(1_000))
    out = tmp_path / "merged"
    with pytest.raises(JinmeiError, match="free"):
        merge_mod.merge(tiny_base, tiny_adapter, out)
    assert not out.exists()
