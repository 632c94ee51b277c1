#!/usr/bin/env bash
# The exact command run on a lent 2-GPU machine (no network) for "several GPUs, one command":
# stage1 of dvc.yaml on 1 GPU, then on 2 GPUs, same params (train.global_batch fixed at the recipe's 64),
# train.processes=auto each time, so the 2-GPU run relaunches itself under torchrun as a user's dvc repro would.
# No dvclive there, so no per-step loss curves: compare first/last/min loss from metrics/stage1.json.
# Carry .gpuwheels (shared/gpu/make-wheelhouse.sh) and .gpucarry/tokenizer (models/base's tokenizer files).
set -uo pipefail
mkdir -p /tmp/site; for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1
backend=${1:-auto}
out=${OUT:-/tmp/out}/$backend; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
set_args=(demo.n_articles=8000 train.global_batch=64 train.per_device_batch=16 train.save_steps=1000
          sanity.steps=10 sanity.min_loss_ratio=1.1 sanity.max_new_tokens=16 stage1.epochs=2)
run() {  # run LABEL VISIBLE_GPUS LIMIT_S [gpu_pipeline args...]
  local label=$1 gpus=$2 limit=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpus timeout "$limit" python3 benchmarks/gpu_pipeline.py --backend "$backend" --shape 1.5b-body \
    --tokenizer .gpucarry/tokenizer --out "$out/$label" --set "${set_args[@]}" "$@" 2>&1 \
    | tee "$out/$label.log" | grep -E "^(demo|split|sanity|stage1):|Error|error" | tail -n 5
  # flat copies: the device tool returns a limited number of files, none deeply nested
  cp "$out/$label/gpu_pipeline.json" "$out/$label-result.json"; cp "$out/$label/stage1.log" "$out/$label-stage1.log"
  rm -rf "${out:?}/$label"
  grep -h "backend=\|launching" "$out/$label-stage1.log"
}
if [ "${REUSE:-0}" = 1 ]; then   # a second measurement on the same machine: base and splits already there
  run gpu1 0 250 --stages stage1 --reuse-base
else
  run gpu1 0 320 --stages demo split sanity stage1
fi
run gpu2 0,1 250 --stages stage1 --reuse-base
