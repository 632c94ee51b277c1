"""The llama.cpp worker process: llama_cpp is imported first and torch never. Eval decodes in these
(engine.complete_all); every other GGUF load (quantize, sanity's vocab check, the set-up check) runs in one too
(engine.in_worker).

Why a process of its own: llama-cpp-python's CUDA build (0.3.36, built on an H200 machine) dies with SIGSEGV in
llama.cpp's init_tokenizer when numpy, tokenizers, torch or transformers were imported before it loaded a GGUF,
and in torch's operator registry when torch is imported after (benchmarks/results/at-scale/cuda-crash-bisect).
llama_cpp loads libllama before it imports numpy. The protocol and the decoding are engine.serve's: this
module only fixes the import order, so no stage lists it as a dependency (it cannot change an answer).
"""
import llama_cpp  # noqa: F401, I001  first: see above

if __name__ == "__main__":
    from jinmei.infer.engine import serve
    from jinmei.errors import run_main

    run_main(serve)
