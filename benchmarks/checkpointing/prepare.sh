#!/usr/bin/env bash
# Local step (CPU, project venv active) of the checkpointing sweep: what the GPU machine needs, under 64 MiB.
#   usage (repo root):  bash benchmarks/checkpointing/prepare.sh
# Writes .gpuwheels (../shared/gpu/make-wheelhouse.sh) and .gpucarry/crash: llama-cpp-python's sdist stripped
# for a CUDA build (benchmarks/strip_llama_sdist.sh) and a tiny random llama GGUF with the real SmolLM2 tokenizer
# (jinmei.model.basemodel.make_tiny_base + jinmei.export.gguf.convert_to_f16), for the crash bisect beside the sweep.
set -euo pipefail
grep -qs '^/.gpucarry/' .git/info/exclude || printf '/.gpuwheels/\n/.gpucarry/\n' >> .git/info/exclude
sdist=${SDIST:-build/sdist/llama_cpp_python-0.3.36.tar.gz}
[ -d .gpuwheels ] || bash ../shared/gpu/make-wheelhouse.sh .gpuwheels
c=.gpucarry/crash; rm -rf "$c"; mkdir -p "$c"
bash benchmarks/strip_llama_sdist.sh "$sdist" "$c/llama_cpp_python-0.3.36.tar.gz"
python - "$c" <<'PY'
import sys, tempfile
from pathlib import Path
from jinmei.model.basemodel import make_tiny_base
from jinmei.export.gguf import convert_to_f16
out = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    make_tiny_base(Path(tmp) / "base", seed=0)
    convert_to_f16(Path(tmp) / "base", out / "tiny.gguf", "tiny")
PY
(cd "$c" && sha256sum tiny.gguf > tiny.sha256)
du -sh .gpuwheels "$c"/*
