#!/usr/bin/env bash
# Beside the sweep, niced (run.sh starts it when .gpucarry/crash was carried): build llama-cpp-python with CUDA
# from the stripped sdist (6 build jobs), then benchmarks/at_scale/cuda_crash.sh on a tiny GGUF with the real
# SmolLM2 tokenizer: which earlier import makes the CUDA build crash in init_tokenizer (issue 18's eval crash).
set -uo pipefail
W=${W:-/tmp/jinmei-ck}; C=$W/crash; out=$W/crash-results; mkdir -p "$out"
cd "${SRC:?repo root}"
export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL=6 CUDACXX=$(command -v nvcc)
start=$SECONDS
python3 -m pip install --no-build-isolation --no-deps --no-index --no-compile --target /tmp/site-cuda \
  --config-settings=build-dir="$W/build" "$C/llama_cpp_python-0.3.36.tar.gz" > "$out/build.log" 2>&1 \
  || { echo "build FAILED after $((SECONDS - start)) s"; tail -30 "$out/build.log"; exit 1; }
echo "build ok in $((SECONDS - start)) s"
sha256sum -c "$C/tiny.sha256" || exit 1
LOGDIR=$out bash benchmarks/at_scale/cuda_crash.sh "$C/tiny.gguf" 2>&1 | tee "$out/bisect.txt"
