"""`split`: check the corpus line by line, drop duplicates, write the fixed dev sets and the training pools, every dev
article measured against eval's budget (jinmei.data.splitting; docs/corpus.md has the contract)."""
import argparse
from pathlib import Path

from jinmei.model import basemodel
from jinmei.config import params, preflight
from jinmei.data import splitting
from jinmei.errors import run_main
from jinmei.model.hfmodel import special_tokens
from jinmei.runtime import set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, default=Path("data/splits"))
    ap.add_argument("--metrics", type=Path, default=Path("metrics/details/split.json"))
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("split")
    preflight.check("split")
    tokenizer = basemodel.load_tokenizer(p.base.model.strip(), p.base.trust_remote_code, p.base.revision)
    budget = splitting.EvalBudget(tokenizer, p.prompt.system, list(p.schema.fields), p.eval.n_ctx,
                                  p.eval.max_new_tokens)
    splitting.run(args.corpus, p.schema.fields, p.split, p.seed, args.out_dir, args.metrics,
                  special_tokens(tokenizer), budget)


if __name__ == "__main__":
    run_main(main)
