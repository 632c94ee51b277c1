#!/usr/bin/env bash
# The exact command run on a lent GPU machine (docs/gpu-benchmark.md): one shape, both backends, side by side.
# usage (repo root, .gpuwheels carried):  benchmarks/gpu_run.sh SHAPE HF_BUDGET_S UNSLOTH_BUDGET_S [extra bench args]
#   e.g. benchmarks/gpu_run.sh qwen2.5-1.5b 200 220 --batches 1,2,4,8,16,32 --random-batches 8
# Writes SHAPE-hf.json, SHAPE-unsloth.json, SHAPE-summary.json and SHAPE.log under $OUT (or benchmarks/results).
set -uo pipefail
shape=${1:?shape}; hf_budget=${2:?hf budget s}; us_budget=${3:?unsloth budget s}; shift 3
out=${OUT:-benchmarks/results}; mkdir -p "$out"; log=$out/$shape.log
mkdir -p /tmp/site
for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
bench=benchmarks/train_throughput.py; model=/tmp/jinmei-bench/$shape
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv; python3 -V; } 2>&1 | tee "$log"
python3 $bench build --shape "$shape" --dir "$model" 2>&1 | tee -a "$log" | grep -E '^built|Error' || exit 1
# each backend in its own process (import unsloth patches transformers); a hard cap keeps the summary reachable
timeout $((hf_budget + 30)) python3 $bench bench --backend hf --shape "$shape" --dir "$model" \
  --out "$out/$shape-hf.json" --time-budget "$hf_budget" "$@" 2>&1 | tee -a "$log" | grep -E '^\[|Error|error'
timeout $((us_budget + 30)) python3 $bench bench --backend unsloth --shape "$shape" --dir "$model" \
  --out "$out/$shape-unsloth.json" --time-budget "$us_budget" "$@" 2>&1 | tee -a "$log" | grep -E '^\[|Error|error'
python3 $bench summary "$out/$shape"-hf.json "$out/$shape"-unsloth.json --out "$out/$shape-summary.json" 2>&1 | tee -a "$log"
