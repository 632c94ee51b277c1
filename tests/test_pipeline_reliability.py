"""Reliability of the real pipeline (params checks: tests/config/test_params.py): outputs that survive SIGKILL, resumable training,
deterministic reruns, no network, safe weight loading, disk checks. RELIABILITY.md summarises the outcomes.
"""
from __future__ import annotations

import ast
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

import tiny_repo
from tiny_repo import ROOT, STAGES, Run, dvc, ran, read_json, without_timing

from jinmei.errors import JinmeiError
from jinmei.config.params import load_all


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


LOSS_KEYS = {"first_loss", "last_loss", "min_loss", "stage1_loss", "stage2_loss"}


def differences(repo: Path, baseline: Path, ignore: set[str] = frozenset()) -> list[str]:
    """What differs from the baseline run: split files byte for byte, metrics except wall-clock timings."""
    found = []
    for rel in ["data/demo/corpus.jsonl", *sorted(str(p.relative_to(baseline)) for p in baseline.glob("data/splits/*.jsonl")),
                *sorted(str(p.relative_to(baseline)) for p in baseline.glob("data/predictions/*.jsonl"))]:
        if (repo / rel).read_bytes() != (baseline / rel).read_bytes():
            found.append(f"{rel}: bytes differ")
    for rel in ("details/split", "details/sanity", "details/stage1", "details/stage2", "details/quantize",
                "details/eval", "eval"):
        path = f"metrics/{rel}.json"
        a, b = without_timing(read_json(repo / path)), without_timing(read_json(baseline / path))
        for key in ignore:
            a.pop(key, None), b.pop(key, None)
        if rel == "details/quantize":
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
        from jinmei.files import atomic_path
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
    from jinmei.files import write_json

    final = tmp_path / "out" / "model"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from jinmei.files import atomic_path
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
    killed_before_end = not (repo / "metrics/details/stage1.json").exists()
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
    metrics = read_json(resumed["repo"] / "metrics/details/stage1.json")
    assert metrics["steps"] == read_json(resumed["straight"] / "metrics/details/stage1.json")["steps"] == 8
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
    a = read_json(resumed["repo"] / "metrics/details/stage1.json")
    b = read_json(resumed["straight"] / "metrics/details/stage1.json")
    keys = {"first_loss", "last_loss", "min_loss"}
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


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

MODEL_STAGES = {"base": "stages/base.py", "sanity": "stages/sanity.py", "stage1": "stages/stage1.py",
                "stage2": "stages/stage2.py",
                "merge": "stages/merge.py", "quantize": "stages/quantize.py", "eval": "stages/eval.py"}


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("stage,module", MODEL_STAGES.items())
def test_model_stages_turn_the_hub_off_first(stage, module):
    """set_offline_env() is called in the stage's entry point, before params are read or a model is loaded."""
    functions = _functions(ROOT / module)
    entry = functions["main"]
    calls = [n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
             for n in ast.walk(entry) if isinstance(n, ast.Call)]
    assert "set_offline_env" in calls, f"{module}: {entry.name}() never calls set_offline_env()"
    assert calls.index("set_offline_env") < calls.index("load"), module


def test_set_offline_env_sets_the_hub_switches():
    code = ("import os; from jinmei.runtime import set_offline_env; set_offline_env(); "
            "print([os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE')])")
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE") and k != "JINMEI_ALLOW_HUB"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert done.stdout.strip() == "['1', '1', '1']", done.stderr


def stage_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
            for folder in ("stages", "jinmei") for p in sorted((ROOT / folder).rglob("*.py"))}


def test_no_pickle_loading_in_stages():
    for name, source in stage_sources().items():
        for pattern in (r"\btorch\.load\(", r"\bpickle\b", r"weights_only\s*=\s*False", r"\bjoblib\b", r"\bdill\b"):
            assert not re.search(pattern, source), f"{name}: {pattern}"


def test_trust_remote_code_only_from_params():
    """No stage hard-codes trust_remote_code=True; the one that passes it takes base.trust_remote_code."""
    for name, source in stage_sources().items():
        for call in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)):
            for kw in call.keywords:
                if kw.arg == "trust_remote_code":
                    assert not (isinstance(kw.value, ast.Constant) and kw.value.value is True), f"{name}"
    assert load_all(ROOT / "params.yaml").base.trust_remote_code is False


@pytest.mark.slow
def test_saved_models_are_safetensors_only(tmp_path_factory):
    built = tiny_repo.session_repo(tmp_path_factory)
    pickled = [str(p.relative_to(built.repo)) for p in built.repo.glob("models/**/*")
               if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt") and "checkpoints" not in p.parts]
    assert pickled == []


def test_base_refuses_a_pickled_model_folder(tiny_base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from jinmei.model.basemodel import _from_pretrained

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
    from jinmei.export import gguf as export
    monkeypatch.setattr(export.shutil, "disk_usage", fake_disk(1_000_000))
    out = tmp_path / "gguf"
    with pytest.raises(JinmeiError, match=r" free, the export needs up to .*; free some disk space"):
        export.export(tiny_base, out, "Q4_K_M", "jinmei", params["prompt"]["system"])
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
    import jinmei.export.merge as merge_mod

    monkeypatch.setattr(shutil, "disk_usage", fake_disk(1_000))
    out = tmp_path / "merged"
    with pytest.raises(JinmeiError, match="free"):
        merge_mod.merge(tiny_base, tiny_adapter, out)
    assert not out.exists()
