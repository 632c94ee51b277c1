"""`sanity`: overfit a fresh LoRA on a few positives; stop the pipeline if it cannot (jinmei.train.sanity)."""
import argparse
from pathlib import Path

from jinmei.config import params, preflight
from jinmei.train import sanity
from jinmei.errors import run_main
from jinmei.files import read_jsonl
from jinmei.runtime import seed_everything, set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="adapter folder (kept for inspection)")
    ap.add_argument("--gate", type=Path, required=True, help="verdict file stage1 depends on")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live", type=Path, required=True, help="dvclive folder for the loss curve")
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("sanity")
    preflight.check("sanity", base_dir=args.base)
    seed_everything(p.seed)
    sanity.run(p, read_jsonl(args.data), args.base, args.out, args.gate, args.metrics, args.live)


if __name__ == "__main__":
    run_main(main)
