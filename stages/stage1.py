"""`stage1`: learn the task on a balanced mixture (recipe: all positives + as many empties, 3 epochs, lr 2e-4)."""
import argparse
import json
from pathlib import Path

from jinmei.config import params, preflight
from jinmei.errors import JinmeiError, run_main
from jinmei.runtime import seed_everything, set_offline_env
from jinmei.train.trainer import maybe_launch_distributed, run_mixture


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--gate", type=Path, required=True, help="the sanity verdict")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live", type=Path, required=True)
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("stage1")
    preflight.check("stage1", base_dir=args.base)
    if not (args.gate.exists() and json.loads(args.gate.read_text()).get("passed")):
        raise JinmeiError(f"{args.gate}: the sanity gate has not passed; run `dvc repro sanity` and fix it first")
    maybe_launch_distributed("stages.stage1", p.train, argv)
    seed_everything(p.seed)
    run_mixture(p, "stage1", base=args.base, splits=args.splits, out=args.out, checkpoints=args.checkpoints,
                metrics=args.metrics, live=args.live)


if __name__ == "__main__":
    run_main(main)
