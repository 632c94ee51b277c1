"""Run dvc.yaml stages in order, as `dvc repro` would run their `cmd`, where dvc itself is not installed.

Why: the lent GPU machines have no dvc (and no network to install it); the at-scale run must still execute the
stages' own commands, unchanged, with the at-scale params file (JINMEI_PARAMS). Each stage's wall time, exit
status, log and metrics file go into one results JSON, appended to across calls; the first failure stops the run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--results", type=Path, required=True, help="results JSON (created or extended)")
    ap.add_argument("--logs", type=Path, required=True, help="folder for one log per stage")
    args = ap.parse_args()

    params = yaml.safe_load(open(os.environ["JINMEI_PARAMS"], encoding="utf-8"))
    commands = yaml.safe_load(open("dvc.yaml", encoding="utf-8"))["stages"]
    results = json.loads(args.results.read_text()) if args.results.exists() else {"stages": {}}
    args.logs.mkdir(parents=True, exist_ok=True)
    for stage in args.stages:
        cmd = commands[stage]["cmd"].replace("${corpus.path}", params["corpus"]["path"])
        started = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {stage}: {cmd}", flush=True)
        with open(args.logs / f"{stage}.log", "w", encoding="utf-8") as log:
            run = subprocess.run(shlex.split(cmd), stdout=log, stderr=subprocess.STDOUT)
        wall = round(time.perf_counter() - started, 1)
        entry = {"cmd": cmd, "wall_s": wall, "exit": run.returncode}
        metrics = Path(f"metrics/{stage}.json")
        if metrics.exists():
            entry["metrics"] = json.loads(metrics.read_text())
        results["stages"][stage] = entry
        args.results.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"[{time.strftime('%H:%M:%S')}] {stage}: exit {run.returncode} in {wall} s", flush=True)
        if run.returncode != 0:
            print((args.logs / f"{stage}.log").read_text(encoding="utf-8")[-4000:], file=sys.stderr, flush=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
