"""benchmarks/step_host.py on the CPU: a tiny random model, the stages' trainer, variants that change no arithmetic."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
DATA = ["--rows", "200", "--chars-median", "100", "--chars-min", "30", "--chars-max", "200", "--max-seq-length", "1024"]


def _bench(*args):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]], check=True, cwd=ROOT,
                   capture_output=True, text=True)


def test_host_variants_time_the_same_training(tmp_path):
    model, out = tmp_path / "tiny", tmp_path / "tiny-b4-new.json"
    _bench("train_throughput.py", "build", "--shape", "tiny", "--dir", str(model))
    _bench("step_host.py", "run", "--backend", "hf", "--shape", "tiny", "--dir", str(model), "--out", str(out),
           "--batch", "4", "--warmup", "2", "--steps", "3", "--variants", "stages,per_step_clock,no_token_count,no_flos",
           *DATA)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["code"] == "stages' make_trainer" and "shape_warmup" in result
    runs = result["variants"]
    assert all(v["s_per_step"] > 0 for v in runs.values()), runs
    assert len(runs["per_step_clock"]["per_step_s"]) == 3
    # on the CPU training is bit-reproducible: switching a host cost off changes no loss
    assert len({v["train_loss"] for v in runs.values()}) == 1, runs
    _bench("step_host.py", "summary", str(out), "--out", str(tmp_path / "s.json"), "--out-md", str(tmp_path / "s.md"))
    table = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert [(r["code"], r["clock"]) for r in table["old_vs_new"]] == [  # both clocks; no profiled run asked
        ("new", "synchronised every step"), ("new", "one synchronisation")]


def test_mfu_is_against_the_higher_probe_read():
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    result = {"matmul_bf16_tflops_measured": 700.0}
    rows = [{"mfu_4n": 0.56, "other": 1.0}, {"mfu_4n": None}]
    assert tt.against_higher_rate(result, rows, ("mfu_4n",), 800.0) == 800.0
    assert rows[0] == {"mfu_4n": pytest.approx(0.49), "mfu_4n_start_rate": 0.56, "other": 1.0}
    assert rows[1] == {"mfu_4n": None} and result["matmul_bf16_tflops_measured_end"] == 800.0
    result, rows = {"matmul_bf16_tflops_measured": 800.0}, [{"mfu_4n": 0.5}]
    assert tt.against_higher_rate(result, rows, ("mfu_4n",), 700.0) == 800.0  # a lower end read changes nothing
    assert rows == [{"mfu_4n": 0.5, "mfu_4n_start_rate": 0.5}] and result["mfu_rate_tflops"] == 800.0
