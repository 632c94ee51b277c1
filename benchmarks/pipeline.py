"""Wall time and peak memory of every pipeline stage, as `dvc repro` runs them.

usage: python benchmarks/pipeline.py [--out benchmarks/results/pipeline-cpu.json] [--stages split sanity ...]

Forces each stage in dependency order (`dvc repro --force --single-item STAGE`), so the numbers are those
of a fresh `dvc repro` on this machine. Peak memory is the largest resident set of the stage's process
tree (wait4's rusage), as /usr/bin/time -v reports it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def stage_order() -> list[str]:
    """Stages in dvc.yaml's order, which lists every stage after the ones it depends on."""
    import yaml

    return list(yaml.safe_load(open("dvc.yaml", encoding="utf-8"))["stages"])


def run_stage(stage: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", stage],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"stage {stage} failed:\n{err[-2000:]}")
    return {"stage": stage, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline-cpu.json"))
    ap.add_argument("--stages", nargs="*", help="default: every stage, in dependency order")
    args = ap.parse_args()
    rows = []
    for stage in args.stages or stage_order():
        rows.append(run_stage(stage))
        print(json.dumps(rows[-1]), flush=True)  # a later stage's failure still leaves these numbers in the log
    total = round(sum(r["wall_s"] for r in rows), 1)
    machine = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
               "processor": platform.processor() or platform.uname().machine}
    try:
        machine["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    table = Table(title=f"dvc repro, stage by stage ({machine.get('cpu_model', '?')}, {os.cpu_count()} cores)")
    for col in ("stage", "wall s", "cpu s", "peak RSS MB"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for r in rows:
        table.add_row(r["stage"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}")
    table.add_row("total", f"{total:.1f}", "", "")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "stages": rows, "total_wall_s": total}, indent=2) + "\n")


if __name__ == "__main__":
    main()
