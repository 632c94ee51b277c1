"""`merge`: fold stage2's LoRA adapter into the base weights; llama.cpp needs plain weights (jinmei.export.merge)."""
import argparse
import time
from pathlib import Path

from jinmei.export import merge
from jinmei.config import params, preflight
from jinmei.errors import run_main
from jinmei.runtime import set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, default=Path("models/base"))
    ap.add_argument("--adapter", type=Path, default=Path("models/stage2"))
    ap.add_argument("--out", type=Path, default=Path("models/merged"))
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("merge")
    preflight.check("merge")
    start = time.perf_counter()
    done = merge.merge(args.base, args.adapter, args.out, p.merge.dtype)
    print(f"merge: {args.adapter} + {args.base} -> {args.out} ({done['lora_tensors']} LoRA tensors, "
          f"{done['dtype']}) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_main(main)
