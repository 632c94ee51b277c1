#!/usr/bin/env bash
# llama-cpp-python 0.3.36's sdist stripped from 76 MB to ~3.5 MB: everything a CUDA build of libllama/ggml (+ the
# `common` library the package's CMakeLists forces on) does not read, so it fits a device call. Build with
# LLAVA_BUILD=OFF.   usage: strip_llama_sdist.sh SDIST OUT.tar.gz
set -euo pipefail
sdist=${1:?sdist}; out=${2:?output .tar.gz}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar xzf "$sdist" -C "$tmp"
src=$tmp/llama_cpp_python-0.3.36
rm -rf "$src"/{.git,.github,examples,docs,tests,docker}
(cd "$src/vendor/llama.cpp" && rm -rf models docs tools examples tests benches media gguf-py conversion scripts \
   pocs app skills ci requirements grammars .devops .github)
(cd "$src/vendor/llama.cpp/ggml/src" && rm -rf ggml-blas ggml-cann ggml-et ggml-hexagon ggml-hip ggml-metal \
   ggml-musa ggml-opencl ggml-openvino ggml-rpc ggml-sycl ggml-virtgpu ggml-vulkan ggml-webgpu ggml-zdnn ggml-zendnn)
tar czf "$out" -C "$tmp" llama_cpp_python-0.3.36
