#!/usr/bin/env bash
# Local step (no GPU): fill the ignored carry folder .gpucarry-eval/ that benchmarks/gpu_eval/run.sh needs on
# the GPU machine, which has no network and no llama-cpp-python. ~8 MB in all.
#   usage (repo root, project venv active, `dvc repro split` done):  bash benchmarks/gpu_eval/prepare.sh [SDIST]
#   SDIST: llama-cpp-python's sdist (default /tmp/llama_cpp_python-0.3.36.tar.gz; `pip download --no-deps
#          --no-binary :all: llama-cpp-python==0.3.36` fetches it). Needs `/.gpucarry-eval/` in .git/info/exclude.
set -euo pipefail
sdist=${1:-/tmp/llama_cpp_python-0.3.36.tar.gz}
carry=.gpucarry-eval
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
prefix=$(python -c 'import sys; print(sys.prefix)')
rm -rf "$carry"; mkdir -p "$carry/py" "$carry/tok"

# 1. llama-cpp-python 0.3.36 sdist, stripped to what a CUDA build reads (~3.5 MB)
bash benchmarks/strip_llama_sdist.sh "$sdist" "$carry/llama_cpp_python-0.3.36.tar.gz"

# 2. pure-Python pieces missing on the GPU image: diskcache (llama-cpp-python's dependency), and llama.cpp's
#    HF->GGUF converter with its own vendored gguf package (scripts/install_converter.sh put it in the venv).
cp -r "$site/diskcache" "$carry/py/"
mkdir -p "$carry/converter"
(cd "$prefix/convert-hf-to-gguf" && tar cf - --exclude=__pycache__ convert_hf_to_gguf.py conversion gguf) \
  | tar xf - -C "$carry/converter"

# 3. the project's tokenizer (SmolLM2's, from models/base), embedded in the benchmark model
cp models/base/tokenizer.json models/base/tokenizer_config.json models/base/chat_template.jinja "$carry/tok/"

# 4. articles of realistic length built from the project's own split files
python benchmarks/gpu_eval/make_articles.py "$carry/articles.jsonl" --n 160 --min-tokens 600 --max-tokens 1000
python benchmarks/gpu_eval/make_articles.py "$carry/articles-long.jsonl" --n 48 --min-tokens 1400 --max-tokens 2000 \
  --seed 7
du -sh "$carry"; du -sh "$carry"/*
