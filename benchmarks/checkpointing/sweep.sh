#!/usr/bin/env bash
# The GPU job of the checkpointing sweep (README.md here): train.gradient_checkpointing true (every layer
# recomputed, the old setting) vs auto (jinmei.train.memory's plan), Unsloth backend, the stages' own load_base ->
# checkpoint_plan -> add_lora + sft_config, 7B shape first (the goal), then 1.5B. One process per plan: auto plans
# each per-device batch on its own. Started once by run.sh; writes $W/results/*.json and $W/sweep.log.
set -uo pipefail
W=${W:-/tmp/jinmei-ck}; R=$W/results; mkdir -p "$R"
cd "${SRC:?repo root}"
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
bench=benchmarks/train_throughput.py
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv; python3 -V; } \
  > "$R/gpu.txt" 2>&1
one() {  # shape setting batches budget_s
  local shape=$1 setting=$2 batches=$3 budget=$4 tag="$1-$2-b${3//,/-}"
  echo "=== $(date +%T) $tag"
  timeout $((budget + 120)) python3 $bench bench --backend unsloth --shape "$shape" --dir "/tmp/jinmei-bench/$shape" \
    --checkpointing "$setting" --batches "$batches" --steps 6 --warmup 2 --time-budget "$budget" \
    --out "$R/$tag.json" > "$R/$tag.log" 2>&1
  echo "rc $? after ${SECONDS}s"; grep -E '^\[|Error|error|Unsloth: checkpoint' "$R/$tag.log" | grep -v Warning | tail -12
}
build() { python3 $bench build --shape "$1" --dir "/tmp/jinmei-bench/$1" 2>&1 | grep -E '^built|Error|kept'; }
build qwen2.5-7b
one qwen2.5-7b auto 8 240
one qwen2.5-7b true 8,16 300
one qwen2.5-7b auto 4 200
build qwen2.5-1.5b
one qwen2.5-1.5b true 16,32 200
one qwen2.5-1.5b auto 16 150
one qwen2.5-1.5b auto 32 150
one qwen2.5-7b auto 16 240
python3 $bench summary "$R"/qwen2.5-*.json --out "$R/summary.json" > "$R/summary.txt" 2>&1; cat "$R/summary.txt"
touch "$W/sweep.done"
