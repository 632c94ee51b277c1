#!/usr/bin/env bash
# The exact command run on a lent GPU machine (no network) for the Unsloth backend check:
# the training stages of dvc.yaml with train.backend=auto (which must pick unsloth), then the Unsloth-equivalence
# tests and, in a pytest of their own (unsloth patches Llama process-wide), the memory plan's byte counts on CUDA.
# Carry .gpuwheels (shared/gpu/make-wheelhouse.sh) and .gpucarry/tokenizer.
set -uo pipefail
mkdir -p /tmp/site; for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 benchmarks/gpu_pipeline.py --backend auto --tokenizer .gpucarry/tokenizer --out "$out/pipeline" "$@" \
  2>&1 | tee "$out/pipeline.log" | grep -E "^(demo|split|sanity|stage1|stage2|merge):|Error|error" 
JINMEI_TEST_BASE=models/base python3 -m pytest -q -p no:cacheprovider tests/train/test_trainer.py \
  2>&1 | tee "$out/tests.log" | tail -n 15
python3 -m pytest -q -p no:cacheprovider tests/train/test_memory.py 2>&1 | tee -a "$out/tests.log" | tail -n 5
grep -h "backend=" "$out"/pipeline/*.log
