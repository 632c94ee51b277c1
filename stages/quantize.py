"""`quantize`: merged HF folder -> f16 GGUF -> Q4_K_M GGUF + Ollama Modelfile, checked against the HF tokenizer.

metrics/details/quantize.json holds the sizes, tensor types, fallbacks and GGUF metadata (jinmei.export.gguf).
"""
import argparse
from pathlib import Path

from jinmei.export import gguf
from jinmei.config import params, preflight
from jinmei.errors import run_main
from jinmei.files import write_json
from jinmei.runtime import set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merged", type=Path, default=Path("models/merged"))
    ap.add_argument("--out-dir", type=Path, default=Path("models/gguf"))
    ap.add_argument("--details", type=Path, default=Path("metrics/details/quantize.json"))
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("quantize")
    preflight.check("quantize")
    report = gguf.export(args.merged, args.out_dir, p.quantize.type, p.quantize.name, p.prompt.system,
                           keep_f16=p.quantize.keep_f16)
    write_json(args.details, report)
    print(gguf.summary_line(report))


if __name__ == "__main__":
    run_main(main)
