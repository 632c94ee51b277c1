#!/usr/bin/env bash
# One device call (repo root, .gpuwheels carried): where a 7B step's time goes under auto, per-device batch 8
# (6 of 28 layers recomputed) and 4 (none): CUDA kernel time by kind (train_throughput.py profile).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p /tmp/site "$out"
for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
bench=benchmarks/train_throughput.py; model=/tmp/jinmei-bench/qwen2.5-7b
python3 $bench build --shape qwen2.5-7b --dir $model 2>&1 | grep -E '^built|Error'
for b in 8 4; do
  timeout 200 python3 $bench profile --backend unsloth --shape qwen2.5-7b --dir $model --checkpointing auto \
    --batch $b --steps 3 --out "$out/profile-qwen2.5-7b-auto-b$b.json" > "$out/profile-b$b.log" 2>&1
  echo "b$b rc $?"; grep -E '^\[profile|^\[unsloth\] gradient|Error' "$out/profile-b$b.log"
done
