"""`demo`: write the embedded demo corpus (a seeded generator of Japanese news-style articles; jinmei.data.demo)."""
import argparse
from pathlib import Path

from jinmei.data import demo
from jinmei.config import params, preflight
from jinmei.errors import run_main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("data/demo/corpus.jsonl"))
    args = ap.parse_args(argv)
    p = params.load("demo")
    preflight.check("demo")
    demo.write_corpus(p.demo, p.schema.fields, p.seed, args.out)


if __name__ == "__main__":
    run_main(main)
