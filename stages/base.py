"""`base`: materialise base.model as a plain Hugging Face folder that every later stage reads (jinmei.model.basemodel)."""
import argparse
import time
from pathlib import Path

from jinmei.model import basemodel
from jinmei.config import params, preflight
from jinmei.errors import run_main
from jinmei.runtime import set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("models/base"))
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("base")
    preflight.check("base")
    start = time.perf_counter()
    basemodel.materialise(p.base.model.strip(), args.out, save_dtype=p.base.save_dtype,
                          trust_remote_code=p.base.trust_remote_code, tiny=p.base.tiny, seed=p.seed,
                          revision=p.base.revision)
    print(f"base: {p.base.model} -> {args.out} ({basemodel.folder_size(args.out) / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_main(main)
