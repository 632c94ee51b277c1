"""`eval`: the quantized GGUF on Dev-All and Dev-Positive, with stage1 and the unquantized merge compared on a
subset, then the recipe's advice (jinmei.eval.evaluation; docs/metrics.md defines every number)."""
import argparse
from pathlib import Path

from jinmei.infer import engine
from jinmei.eval import evaluation
from jinmei.config import params, preflight
from jinmei.errors import run_main
from jinmei.runtime import set_offline_env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf-dir", type=Path, default=Path("models/gguf"))
    ap.add_argument("--gguf", type=Path, help="a GGUF file instead of <gguf-dir>/<quantize.name>-<quantize.type>.gguf")
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--stage1", type=Path, required=True)
    ap.add_argument("--merged", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True)
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    ap.add_argument("--advice", type=Path, required=True)
    ap.add_argument("--errors", type=Path, required=True, help="metrics/errors.md: counts and examples of failures")
    ap.add_argument("--stage1-metrics", type=Path, required=True)
    ap.add_argument("--stage2-metrics", type=Path, required=True)
    args = ap.parse_args(argv)
    set_offline_env()
    p = params.load("eval")
    preflight.check("eval")
    evaluation.run(p, gguf=args.gguf or engine.gguf_path(p.quantize, args.gguf_dir), splits_dir=args.splits,
                   base=args.base, stage1=args.stage1, merged=args.merged, metrics_file=args.metrics,
                   details_file=args.details, predictions_dir=args.predictions, plots_dir=args.plots,
                   advice_file=args.advice, errors_file=args.errors, stage1_metrics=args.stage1_metrics,
                   stage2_metrics=args.stage2_metrics)


if __name__ == "__main__":
    run_main(main)
