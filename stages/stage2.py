"""`stage2`: continue stage1's adapter briefly on the production mix (90% empty).

Short on purpose (0.25-0.5 epoch, lr 1e-4): a long stage2 drifts to answering "empty" for everything.
"""
import argparse
from pathlib import Path

from jinmei.config import params, preflight
from jinmei.errors import run_main
from jinmei.runtime import seed_everything, set_offline_env
from jinmei.train.trainer import maybe_launch_distributed, run_mixture


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--init", type=Path, required=True, help="adapter to continue (stage1's)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoints", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live", type=Path, required=True)
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("stage2")
    preflight.check("stage2", base_dir=args.base)
    maybe_launch_distributed("stages.stage2", p.train, argv)
    seed_everything(p.seed)
    run_mixture(p, "stage2", base=args.base, splits=args.splits, out=args.out, checkpoints=args.checkpoints,
                metrics=args.metrics, live=args.live, init_adapter=args.init)


if __name__ == "__main__":
    run_main(main)
