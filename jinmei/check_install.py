"""After set-up: prove that the parts which otherwise fail late (converter, GGUF loading, llama.cpp) work."""
from __future__ import annotations

import os
import re
import subprocess
import sys


# torch and transformers are imported first because eval's process holds both when llama.cpp loads: a CUDA build
# that decoded fine alone died with SIGSEGV in llama.cpp's tokenizer set-up once they were loaded (H200, 2026-12-02,
# benchmarks/results/at-scale/cuda-crash-load-verbose.txt); the check must see what eval will see.
DECODE_SCRIPT = """
import sys
import torch, transformers  # noqa: F401
import llama_cpp
gpu = sys.argv[2] == "gpu"
if gpu and not llama_cpp.llama_supports_gpu_offload():
    sys.exit("llama-cpp-python was built without GPU offload")
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, n_gpu_layers=-1 if gpu else 0, verbose=gpu)
out = llm("横浜市中区の会社員、山田太郎容疑者（45）を逮捕した。" * 8, max_tokens=2, temperature=0.0)
print(out["usage"]["prompt_tokens"])
"""
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def decode_check(gguf_file, gpu: bool = False) -> list[str]:
    """Decode a prompt of a few hundred tokens in a child process: the batched matmul kernels are where a
    build for the wrong CPU dies (SIGILL), and a dying child can still be reported. gpu: every layer offloaded."""
    run = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(gguf_file), "gpu" if gpu else "cpu"],
                         capture_output=True, text=True)
    if run.returncode == 0:
        tokens = run.stdout.strip().splitlines()[-1]
        if gpu:
            found = OFFLOADED.search(run.stderr)
            if not found or found.group(1) != found.group(2):
                return [f"llama.cpp decoded, but not with every layer on the GPU ({found and found.group(0)})"]
            print(f"ok  llama.cpp decodes a {tokens}-token prompt with {found.group(0)}")
            return []
        print(f"ok  llama.cpp decodes a {tokens}-token prompt")
        return []
    if run.returncode < 0 and gpu:
        return [f"llama.cpp's GPU build crashed with signal {-run.returncode} loading a GGUF in a process that has "
                "torch and transformers loaded, as eval's does: eval and quantize would die the same way. "
                f"Its last words: {run.stderr.strip()[-300:]}"]
    if run.returncode < 0:
        # scripts/setup.sh holds the portable build flags; it rebuilds llama-cpp-python only when it is absent
        return [f"llama.cpp crashed with signal {-run.returncode} decoding a prompt: it was built for CPU "
                "instructions this machine cannot run. Rebuild it portable: "
                "pip uninstall -y llama-cpp-python && bash scripts/setup.sh"]
    return [f"llama.cpp decoding: {run.stderr.strip()[-300:]}"]


def main() -> None:
    from jinmei.basemodel import bundled_gguf_path

    gpu = "--gpu" in sys.argv[1:]
    problems = []
    gguf_file = bundled_gguf_path()
    try:
        import llama_cpp

        vocab = llama_cpp.Llama(model_path=str(gguf_file), vocab_only=True, verbose=False)
        assert vocab.tokenize("人名".encode(), add_bos=False), "llama.cpp tokenized nothing"
        print(f"ok  llama-cpp-python {llama_cpp.__version__} reads {gguf_file.name}")
    except Exception as e:  # noqa: BLE001 - every failure here is reported, then the exit code says it
        problems.append(f"llama-cpp-python: {e}")
    problems += decode_check(gguf_file, gpu)
    try:
        from transformers.utils import is_gguf_available

        if not is_gguf_available():
            raise RuntimeError("transformers does not see the `gguf` package (>=0.10 needed)")
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        print("ok  transformers loads GGUF files")
    except Exception as e:  # noqa: BLE001
        problems.append(f"transformers GGUF loading: {e}")
    try:
        from jinmei.export import converter_dir

        run = subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", "--help"], capture_output=True, text=True,
                             cwd=converter_dir(), env={**os.environ, "PYTHONPATH": str(converter_dir())})
        if run.returncode != 0:
            raise RuntimeError(run.stderr.strip()[-300:])
        print(f"ok  llama.cpp's HF->GGUF converter runs ({converter_dir()})")
    except Exception as e:  # noqa: BLE001
        problems.append(f"HF->GGUF converter: {e}")
    if problems:
        print("set-up check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
