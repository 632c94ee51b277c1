"""`split`: check the corpus line by line, drop duplicates, write the fixed dev sets and the training pools
(jinmei.splitting; docs/corpus.md has the contract)."""
import argparse
from pathlib import Path

from jinmei import params, preflight, splitting
from jinmei.errors import run_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, default=Path("data/splits"))
    ap.add_argument("--metrics", type=Path, default=Path("metrics/split.json"))
    args = ap.parse_args(argv)
    p = params.load("split")
    preflight.check("split")
    splitting.run(args.corpus, p.schema.fields, p.split, p.seed, args.out_dir, args.metrics)


if __name__ == "__main__":
    run_main(main)
