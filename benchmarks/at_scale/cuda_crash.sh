#!/usr/bin/env bash
# Which import makes llama.cpp's CUDA build crash when it loads a GGUF (measured 2026-12-02 on an H200: alone it
# loads; after `import transformers` or torch it dies with SIGSEGV in init_tokenizer). Run on the GPU machine after
# pipeline.sh built /tmp/site-cuda:  bash benchmarks/at_scale/cuda_crash.sh GGUF
# Prints one line per prior import: ok, or the signal.
set -uo pipefail
gguf=${1:?GGUF file}
export PYTHONPATH=/tmp/site-cuda:/tmp/site
logs=${LOGDIR:-/tmp}  # one log per case: crash-<import>.log
for first in "" numpy yaml jinja2 regex PIL._imaging tokenizers safetensors huggingface_hub torch transformers; do
  python3 -X faulthandler - "$gguf" "$first" > "$logs/crash-${first:-nothing}.log" 2>&1 <<'PY'
import importlib, sys
if sys.argv[2]:
    importlib.import_module(sys.argv[2])
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=-1, n_ctx=512, verbose=False)
print(len(llm.tokenize("東京都の会社員".encode(), add_bos=False)))
PY
  rc=$?
  echo "import ${first:-(nothing)} first: $([ $rc -eq 0 ] && echo ok || echo "exit $rc")"
done
# the other order: the GGUF loaded first, then the import, then a decode
for after in transformers torch; do
  python3 -X faulthandler - "$gguf" "$after" > "$logs/crash-after-$after.log" 2>&1 <<'PY'
import importlib, sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=-1, n_ctx=512, verbose=False)
importlib.import_module(sys.argv[2])
print(llm("東京都の会社員", max_tokens=4, temperature=0.0)["usage"])
PY
  rc=$?
  echo "GGUF loaded first, then import $after, then decode: $([ $rc -eq 0 ] && echo ok || echo "exit $rc")"
done
