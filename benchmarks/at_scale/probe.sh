#!/usr/bin/env bash
# Device call 1 of the at-scale run (benchmarks/at_scale/README.md): the training tokens/s of the bundled model's
# shape (random weights: throughput does not depend on them) on the stages' own load_model + sft_config, at the
# at-scale rows' lengths, for both backends, gradient checkpointing off; the run is sized from it.
# Also leaves the wheelhouse unpacked (and the GGUF's first piece, if carried) in /tmp for the next call.
#   device run, carry [".gpuwheels", ".gpucarry/probe-params.yaml"]:  bash benchmarks/at_scale/probe.sh
set -uo pipefail
W=/tmp/jinmei-as; mkdir -p "$W" /tmp/site; out=${OUT:-/tmp/out}; mkdir -p "$out"
cp .gpucarry/gguf-a/* "$W/" 2>/dev/null
for f in .gpuwheels/*; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
       UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
echo "$(nproc) cores; $(python3 --version); nvcc $(command -v nvcc); cmake $(command -v cmake); $(df -h /tmp | tail -1)" | tee -a "$out/gpu.txt"
python3 benchmarks/train_throughput.py build --shape smollm2-135m --dir "$W/m135" 2>&1 | tail -1
rows="--rows 4000 --chars-median 470 --chars-sigma 0.35 --chars-min 150 --chars-max 800 --tokens-per-char 1.81
      --prompt-overhead 54 --empty-answer-tokens 7 --positive-answer-tokens 60,120 --positive-share 0.5"
for backend in unsloth hf; do
  python3 benchmarks/train_throughput.py bench --backend "$backend" --shape smollm2-135m --dir "$W/m135" \
    --params .gpucarry/probe-params.yaml --batches ${BATCHES:-16,32,64} --warmup 2 --steps 6 --max-seq-length 2048 \
    --time-budget 170 --out "$out/probe-$backend.json" $rows > "$out/probe-$backend.log" 2>&1
  grep -E "^\[(hf|unsloth)\]" "$out/probe-$backend.log" | cut -c1-220; tail -3 "$out/probe-$backend.log" | cut -c1-300
done
ls -la "$W"
