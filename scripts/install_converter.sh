#!/usr/bin/env bash
# llama.cpp's HF->GGUF converter, from the same llama.cpp the runtime is compiled from: the llama-cpp-python sdist
# that scripts/setup.sh keeps in build/sdist vendors it (convert_hf_to_gguf.py, conversion/, gguf-py/gguf). Its
# own `gguf/` package is newer than PyPI's gguf (which transformers' GGUF loader needs), so it goes into a folder
# of its own inside the environment, which jinmei/export/gguf.py puts first on the converter's PYTHONPATH only.
# (PyPI convert-hf-to-gguf 0.1.1, used before, cannot convert Gemma 4 under transformers 5.17: KeyError
# 'global_head_dim'; the vendored converter reads per_layer_config.)
set -euo pipefail
cd "$(dirname "$0")/.."
sdist=$(ls build/sdist/llama_cpp_python-*.tar.gz | head -1)
target="$(python -c 'import sys; print(sys.prefix)')/convert-hf-to-gguf"
tmp=$(mktemp -d)
tar -xzf "$sdist" -C "$tmp" --strip-components=3 --wildcards "*/vendor/llama.cpp/convert_hf_to_gguf.py" \
  "*/vendor/llama.cpp/conversion/*" "*/vendor/llama.cpp/gguf-py/gguf/*"
rm -rf "$target" && mkdir -p "$target"
mv "$tmp/convert_hf_to_gguf.py" "$tmp/conversion" "$target/" && mv "$tmp/gguf-py/gguf" "$target/gguf"
rm -rf "$tmp"
echo "llama.cpp's converter from $(basename "$sdist") -> $target"
