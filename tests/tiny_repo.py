"""A tiny temporary copy of this repository that the real `dvc` CLI runs end to end in about a minute.

The tests that exercise the user's workflow (dvc repro, dvc exp run -S, kills, offline runs) build one
tiny pipeline per test session and clone it for every test that mutates it.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
# Not copied: other runs' results, the main repository's lock and metrics (the tiny repo makes its own).
EXCLUDED = (re.compile(r"^benchmarks/results/"), re.compile(r"^dvc\.lock$"), re.compile(r"^metrics/"),
            re.compile(r"^data/real/"))   # real corpora: no tiny pipeline reads them

# Smallest configuration that still runs every stage for real (tiny random llama, 2 optimizer steps).
TINY_PARAMS: dict[str, Any] = {
    "demo": {"n_articles": 120, "positive_share": 0.3},
    # float32: in bfloat16 a few tiny LoRA steps round away in the merge, the merged model stays byte-identical
    # and DVC rightly skips quantize; the workflow test needs every trained change to reach the GGUF
    "base": {"model": "tiny-random", "save_dtype": "float32"},
    # keep: the tiny answers (16 tokens) are shorter than most gold answers; eval scores those as truncated
    "split": {"dev_all_size": 20, "dev_all_positive_share": 0.2, "dev_positive_size": 8, "sanity_size": 4,
              "too_long": "keep"},
    "sanity": {"steps": 2, "min_loss_ratio": 0.0, "min_exact_match": 0.0, "max_new_tokens": 16},
    # warmup 0: HF schedulers run the first optimizer step at lr 0 during warmup, so a 1-step stage2 trained
    # nothing at all and every stage2 experiment produced the same model
    "train": {"global_batch": 4, "per_device_batch": 2, "save_steps": 1, "warmup_ratio": 0.0},
    "lora": {"r": 4, "alpha": 8},
    "stage1": {"size": 8, "epochs": 1},
    "stage2": {"size": 8, "epochs": 0.5},
    "eval": {"max_new_tokens": 16, "compare_subset": 2},
}
# Keys whose values are wall-clock measurements, never expected to repeat.
TIMING_KEYS = {"seconds", "tokens_per_s", "articles_per_s", "prompt_tokens_per_s", "generated_tokens_per_s",
               "train_minutes", "eval_minutes"}

RUNNING = re.compile(r"Running stage '([\w-]+)'")
SKIPPED = re.compile(r"Stage '([\w-]+)' didn't change, skipping")
CACHED = re.compile(r"Stage '([\w-]+)' is cached - skipping run")


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test interpreter's venv first on PATH, so dvc's `python -m stages.X` is this Python."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **(extra or {}), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200", "TERM": "dumb",
            "GIT_AUTHOR_NAME": "jinmei-test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "jinmei-test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}


def sh(repo: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=repo, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {done.returncode} in {repo}:\n{done.stdout}\n{done.stderr}")
    return done


def dvc(repo: Path, *args: str, check: bool = True, timeout: float = 600) -> str:
    """Run the real dvc CLI; returns stdout and stderr together (DVC logs stage decisions on both)."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} exited {done.returncode} in {repo}:\n{done.stdout[-6000:]}")
    return done.stdout


def ran(output: str) -> list[str]:
    return RUNNING.findall(output)


def skipped(output: str) -> list[str]:
    return SKIPPED.findall(output) + CACHED.findall(output)


def source_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return sorted(p for p in listed if p and (ROOT / p).is_file() and not any(x.search(p) for x in EXCLUDED))


def write_params(repo: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    path = repo / "params.yaml"
    params = deep_merge(yaml.safe_load(path.read_text(encoding="utf-8")), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    return params


_SNAPSHOT: dict[str, Path] = {}


def snapshot(parent: Path) -> Path:
    """The sources as they were when the session began: every tiny repo of a session is built from the same code,
    even while someone edits the working tree."""
    if "sources" not in _SNAPSHOT:
        dst = parent / ".jinmei-sources"
        for rel in source_files():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
        _SNAPSHOT["sources"] = dst
    return _SNAPSHOT["sources"]


def make_repo(dst: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the session's sources into dst, apply TINY_PARAMS (+ overrides), `git init` and commit."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(snapshot(dst.parent), dst)
    write_params(dst, deep_merge(TINY_PARAMS, overrides or {}))
    sh(dst, "git", "init", "-q", "-b", "main")
    sh(dst, "git", "add", "-A")
    sh(dst, "git", "commit", "-q", "-m", "tiny jinmei")
    return dst


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "--allow-empty", "-m", message)


def clone(src: Path, dst: Path) -> Path:
    """A full independent copy (workspace, .git, .dvc/cache); DVC-linked files become plain copies."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


@dataclass
class Run:
    """A `dvc` subprocess whose output lines are timestamped as they arrive; killable as a group."""

    repo: Path
    args: tuple[str, ...]
    prefix: tuple[str, ...] = ()        # e.g. ("unshare", "-rn"): run dvc inside a network namespace
    extra_env: dict[str, str] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self):
        self.started = time.monotonic()
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "dvc", *self.args], cwd=self.repo,
                                     env=env(self.extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, line))

    @property
    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float = 300) -> float:
        """Seconds since start when a line matching pattern arrived; fails if the run ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if regex.search(line):
                    return t
            if self.proc.poll() is not None:
                self.reader.join(5)
                if any(regex.search(line) for _, line in self.lines):
                    return next(t for t, line in self.lines if regex.search(line))
                raise AssertionError(f"dvc {' '.join(self.args)} ended (exit {self.proc.returncode}) before "
                                     f"{pattern!r}:\n{self.output[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output[-4000:]}")

    def kill(self) -> None:
        """SIGKILL dvc and every stage process it started (the whole session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.reader.join(5)

    def wait(self, timeout: float = 600) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.reader.join(5)
        return code

    def stage_seconds(self) -> dict[str, float]:
        """Wall time of each stage that ran: from its 'Running stage' line to the next stage's (or the end)."""
        marks = [(t, m.group(1)) for t, line in self.lines if (m := RUNNING.search(line))]
        end = self.lines[-1][0] if self.lines else 0.0
        return {name: round((marks[i + 1][0] if i + 1 < len(marks) else end) - t, 1)
                for i, (t, name) in enumerate(marks)}


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_KEYS and k != "throughput"}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


@dataclass
class Built:
    repo: Path
    run: Run
    seconds: float


_SESSION: dict[str, Built] = {}


def session_repo(tmp_path_factory) -> Built:
    """The tiny pipeline, built and `dvc repro`-ed once per test session; clone it before mutating it."""
    if "built" not in _SESSION:
        repo = make_repo(tmp_path_factory.mktemp("tiny-session") / "repo")
        run = Run(repo, ("repro",))
        code = run.wait()
        if code != 0:
            raise AssertionError(f"dvc repro of the tiny pipeline failed (exit {code}):\n{run.output[-6000:]}")
        commit(repo, "tiny pipeline, reproduced")
        _SESSION["built"] = Built(repo, run, round(run.lines[-1][0], 1))
        print(f"\ntiny pipeline built in {_SESSION['built'].seconds} s: {run.stage_seconds()}")
    return _SESSION["built"]
