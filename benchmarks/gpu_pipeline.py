"""Run the training stages on a GPU machine with a chosen backend, as dvc.yaml runs them.

The lent GPU machines have no network, no dvc and no room to carry a model, so this script
1. builds models/base from a config with random weights (SmolLM2-135M's shape unless --shape says
   otherwise) and the real SmolLM2 tokenizer carried in --tokenizer,
2. writes a params file for a small configuration (JINMEI_PARAMS) with train.backend=--backend,
3. runs the `cmd` of the stages demo, split, sanity, stage1, stage2 and merge from dvc.yaml, in order,
4. writes every stage's metrics and wall time to --out.
With random weights the sanity gate checks only that the loss falls (min_exact_match 0).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

SHAPES = {  # name: LlamaConfig kwargs
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, tie_word_embeddings=True, rope_theta=100000.0),
    # Qwen2.5-1.5B's decoder body (hidden, layers, GQA, MLP) on SmolLM2's vocabulary: enough work per step
    # that a 1- vs 2-GPU comparison measures the GPUs, not the launcher
    "1.5b-body": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                      intermediate_size=8960, tie_word_embeddings=True, rope_theta=1000000.0),
}
STAGES = ["demo", "split", "sanity", "stage1", "stage2", "merge"]


def build_base(tokenizer_dir: Path, shape: str, out: Path, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **SHAPES[shape])
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="unsloth", choices=["auto", "hf", "unsloth"])
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. stage1.size=256")
    ap.add_argument("--stages", nargs="*", default=STAGES, choices=STAGES, help="which of them to run (default: all, in order)")
    ap.add_argument("--reuse-base", action="store_true", help="keep the models/base a previous run built")
    args = ap.parse_args()

    params = yaml.safe_load(open("params.yaml", encoding="utf-8"))
    params["train"].update(backend=args.backend, per_device_batch=8, global_batch=16, save_steps=20)
    params["sanity"].update(steps=30, lr=1e-3, min_loss_ratio=1.5, min_exact_match=0.0, max_new_tokens=64)
    params["stage1"].update(size=None, epochs=2)
    params["stage2"].update(size=512, epochs=0.25)
    for item in args.set:
        key, value = item.split("=", 1)
        node = params
        *path, last = key.split(".")
        for k in path:
            node = node[k]
        node[last] = yaml.safe_load(value)
    args.out.mkdir(parents=True, exist_ok=True)
    params_file = args.out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "JINMEI_PARAMS": str(params_file.resolve())}

    results = {"backend": args.backend, "shape": args.shape, "stages": {}}
    started = time.perf_counter()
    if not args.reuse_base:
        build_base(args.tokenizer, args.shape, Path("models/base"), int(params["seed"]))
        results["stages"]["base (random)"] = {"wall_s": round(time.perf_counter() - started, 1)}
    commands = yaml.safe_load(open("dvc.yaml", encoding="utf-8"))["stages"]
    for stage in [s for s in STAGES if s in args.stages]:
        cmd = commands[stage]["cmd"].replace("${corpus.path}", params["corpus"]["path"])
        started = time.perf_counter()
        run = subprocess.run(shlex.split(cmd), env=env, capture_output=True, text=True)
        wall = round(time.perf_counter() - started, 1)
        (args.out / f"{stage}.log").write_text(run.stdout + run.stderr, encoding="utf-8")
        results["stages"][stage] = {"wall_s": wall, "exit": run.returncode}
        metrics = Path(f"metrics/{stage}.json")
        if metrics.exists():
            results["stages"][stage]["metrics"] = json.loads(metrics.read_text())
        print(f"{stage}: exit {run.returncode} in {wall} s", flush=True)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-3000:], file=sys.stderr)
            break
    (args.out / "gpu_pipeline.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
