#!/usr/bin/env bash
# GPU-machine side of the eval benchmark, resumable: every step leaves a marker in $W and is skipped once done.
#   build (background, 16 cores)  ||  random 7B model -> f16 GGUF
#   then Q4_K_M quantization (needs the build), then bench.py.
# Started in the background by run.sh (setsid), so a `run` call that returns does not kill it.
# State: W (default /tmp/jge). Local dry run: W=/tmp/x MODEL_ARGS='--shape tiny --device cpu' BENCH_ARGS='...' with
# $W/build.done touched beforehand (then the venv's llama_cpp is used). Needs the carry folder .gpucarry-eval (prepare.sh). Repo root is the cwd.
set -uo pipefail
W=${W:-/tmp/jge}; C=$PWD/.gpucarry-eval
mkdir -p "$W"
log() { echo "[$(date +%T) +$((SECONDS))s] $*"; }

# ---- environment: CUDA, cuBLAS (toolkit or the pip wheel torch uses), python paths
nvcc_bin=$(command -v nvcc); cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
cublas=$(ls "$cuda_root"/lib64/libcublas.so* "$cuda_root"/targets/x86_64-linux/lib/libcublas.so* 2>/dev/null | head -1)
extra_cmake=""
if [ -z "$cublas" ]; then   # no cuBLAS in the toolkit: use the nvidia-cublas wheel's (headers + libraries)
  cublas=$(python3 - <<'EOF'
import glob, os, site
for d in site.getsitepackages():
    for f in sorted(glob.glob(os.path.join(d, "nvidia", "**", "libcublas.so*"), recursive=True)):
        print(f); raise SystemExit
EOF
)
  libdir=$(dirname "$cublas"); incdir=$(dirname "$libdir")/include
  cublaslt=$(ls "$libdir"/libcublasLt.so* | head -1)
  extra_cmake="-DCUDA_cublas_LIBRARY=$cublas -DCUDA_cublasLt_LIBRARY=$cublaslt"
  export CPATH=$incdir${CPATH:+:$CPATH} LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONPATH=$W/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  JINMEI_CONVERTER_DIR=$C/converter TOKENIZERS_PARALLELISM=false
log "nvcc $nvcc_bin (root $cuda_root), cuBLAS $cublas ${extra_cmake:+(wheel)}; $(nproc) cores; $(df -h /tmp | tail -1)"

# ---- 1. llama-cpp-python 0.3.36 with CUDA for sm_90 (background, its own log)
if [ ! -f "$W/build.done" ] && [ ! -f "$W/build.started" ]; then
  touch "$W/build.started"
  (
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF $extra_cmake"
    export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CUDACXX=$nvcc_bin
    start=$SECONDS
    echo "CMAKE_ARGS=$CMAKE_ARGS"
    if python3 -m pip install --no-build-isolation --no-deps --no-index --no-compile --target "$W/site" \
         --config-settings=build-dir="$W/build" -v "$C/llama_cpp_python-0.3.36.tar.gz"; then
      cp -r "$C/py/diskcache" "$W/site/"
      echo "build ok in $((SECONDS - start)) s" && touch "$W/build.done"
    else
      echo "build FAILED after $((SECONDS - start)) s" && touch "$W/build.failed"
    fi
  ) > "$W/build.log" 2>&1 &
  log "build started (log $W/build.log)"
fi

# ---- 2. random Qwen2.5-7B-shaped model (GPU), 3. f16 GGUF (converter, CPU)
if [ ! -f "$W/model.done" ]; then
  log "building the random model"
  python3 benchmarks/gpu_eval/make_model.py "$W/hf" --tokenizer "$C/tok" ${MODEL_ARGS:-} 2>&1 | grep -v "Writing model shards" \
    && touch "$W/model.done" || { log "model FAILED"; exit 1; }
fi
if [ ! -f "$W/convert.done" ]; then
  log "converting to f16 GGUF"
  python3 benchmarks/gpu_eval/quantize.py "$W/hf" "$W/gguf" --step convert && touch "$W/convert.done" \
    || { log "convert FAILED"; exit 1; }
  rm -rf "$W/hf"
fi

# ---- 4. wait for the build, quantize to Q4_K_M
while [ ! -f "$W/build.done" ] && [ ! -f "$W/build.failed" ]; do sleep 5; done
if [ -f "$W/build.failed" ]; then log "build FAILED:"; grep -iE "error|fatal" "$W/build.log" | tail -20; exit 1; fi
[ -f "$W/build.log" ] && log "$(tail -1 "$W/build.log")"
python3 -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'gpu offload', llama_cpp.llama_supports_gpu_offload())"
if [ ! -f "$W/quantize.done" ]; then
  log "quantizing to Q4_K_M"
  python3 benchmarks/gpu_eval/quantize.py "$W/hf" "$W/gguf" --step quantize && touch "$W/quantize.done" \
    || { log "quantize FAILED"; exit 1; }
  rm -f "$W/gguf/bench-F16.gguf"
fi

# ---- 5. the benchmark
if [ ! -f "$W/bench.done" ]; then
  log "benchmark"
  python3 benchmarks/gpu_eval/bench.py --gguf "$W/gguf/bench-Q4_K_M.gguf" --articles "$C/articles.jsonl" \
    --long-articles "$C/articles-long.jsonl" --out "$W/eval-throughput.json" ${BENCH_ARGS:-} \
    && touch "$W/bench.done" || { log "bench FAILED"; exit 1; }
fi
log "pipeline done"
