"""After set-up: prove that the parts which otherwise fail late (converter, GGUF loading, llama.cpp) work."""
from __future__ import annotations

import os
import re
import subprocess
import sys


OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
PROBE = "横浜市中区の会社員、山田太郎容疑者（45）を逮捕した。" * 8


def decode_probe(gguf: str) -> dict:
    """In a llama worker, as eval decodes: the bundled GGUF through engine.Engine (every layer offloaded when the
    build can), a prompt of a few hundred tokens, llama.cpp's log kept to see where the layers went."""
    import llama_cpp

    from jinmei.infer.engine import Engine
    from jinmei.export.gguf import llama_log

    with llama_log() as lines:
        engine = Engine(gguf, n_ctx=1024, n_threads=2, max_new_tokens=2, batch_size=1)
        answer = engine.complete("記事の人名をJSONで答える。", [PROBE])[0]
    found = OFFLOADED.search("".join(lines))
    return {"version": llama_cpp.__version__, "prompt_tokens": answer.prompt_tokens,
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()), "offloaded": found and found.group(0),
            "all_offloaded": bool(found) and found.group(1) == found.group(2)}


def decode_check(gguf_file, gpu: bool = False) -> list[str]:
    """The bundled GGUF read and decoded in a llama worker, eval's own path: the batched matmul kernels are where a
    build for the wrong CPU dies (SIGILL), and a CUDA build that dies beside torch would die there too (it never
    meets torch: jinmei.infer.llama_worker). gpu: every layer must be offloaded."""
    from jinmei.infer.engine import in_worker
    from jinmei.errors import JinmeiError

    try:
        found = in_worker("jinmei.check_install:decode_probe", gguf=str(gguf_file))
    except JinmeiError as e:
        # scripts/setup.sh holds the portable build flags; it rebuilds llama-cpp-python only when it is absent
        fix = ("" if gpu else " If it was killed by SIGILL, it was built for CPU instructions this machine cannot "
               "run; rebuild it portable: pip uninstall -y llama-cpp-python && bash scripts/setup.sh")
        return [f"llama.cpp decoding: {e}{fix}"]
    if not found["prompt_tokens"]:
        return [f"llama.cpp tokenized nothing reading {gguf_file}"]
    if gpu and not found["gpu_offload"]:
        return ["llama-cpp-python was built without GPU offload: CMAKE_ARGS=-DGGML_CUDA=on bash scripts/setup.sh gpu"]
    if gpu and not found["all_offloaded"]:
        return [f"llama.cpp decoded, but not with every layer on the GPU ({found['offloaded']})"]
    print(f"ok  llama-cpp-python {found['version']} reads {gguf_file.name} and decodes a "
          f"{found['prompt_tokens']}-token prompt" + (f" with {found['offloaded']}" if gpu else ""))
    return []


def main() -> None:
    from jinmei.model.basemodel import bundled_gguf_path

    gpu = "--gpu" in sys.argv[1:]
    problems = []
    gguf_file = bundled_gguf_path()
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
        from jinmei.export.gguf import converter_dir

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
