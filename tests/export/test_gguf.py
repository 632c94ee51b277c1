"""merge + quantize: the GGUF answers like the merged HF model, and the Modelfile prompts like training.

Fixtures are built once per session: the real SmolLM2 base with a small random LoRA (merged, exported
to f16 + Q4_K_M), and a tiny random llama through the same path (CLI, params file).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import llama_cpp
import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from jinmei.model import basemodel as base
from jinmei.export import gguf as quantize
from jinmei.export import merge
from stages import merge as merge_stage
from stages import quantize as quantize_stage
from jinmei.errors import JinmeiError

SYSTEM = "Extract the persons from the Japanese news article. Answer with JSON only."
PROMPTS = [
    "東京都港区の会社員、山田太郎さん(45)が24日、詐欺の疑いで警視庁に逮捕された。",
    "大阪市の天気は晴れ、最高気温は18度の見込み。",
    "What is the capital of France? Answer in one word.",
]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Random weights at the usual std 0.02 give near-uniform logits whose argmax flips on f16 rounding;
# at std 0.5 the margins are clear, so a disagreement means an export bug, not a coin toss.
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "initializer_range": 0.5}


def make_random_adapter(base_dir: Path, out_dir: Path, seed: int = 0, std: float = 0.02) -> Path:
    """A PEFT LoRA adapter as training saves it, with random (non-zero) B so merging changes the model."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model.save_pretrained(out_dir)
    return out_dir


@contextlib.contextmanager
def one_thread():
    """On 2 shared CPU cores, 2 torch / llama.cpp threads ran 3-40x slower than 1 (they spin at barriers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OMP_NUM_THREADS", "1")  # the converter subprocess
            yield
    finally:
        torch.set_num_threads(threads)


def write_params(path: Path, **sections) -> Path:
    """The committed params.yaml with these sections changed (every stage checks the whole file)."""
    from jinmei.config.params import read_yaml
    from tiny_repo import ROOT, deep_merge

    params = deep_merge(read_yaml(ROOT / "params.yaml"), {"prompt": {"system": SYSTEM}, **sections})
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def real(tmp_path_factory) -> dict[str, Path]:
    """SmolLM2 (bundled) + random LoRA -> merged -> f16 and Q4_K_M GGUF."""
    shared = tmp_path_factory.getbasetemp() / "bundled-base"  # the same folder tests/model/test_basemodel.py builds
    root = tmp_path_factory.mktemp("real")
    with one_thread():
        if not (shared / "config.json").exists():
            base.materialise("bundled:smollm2-135m-instruct", shared, save_dtype="bfloat16")
        adapter = make_random_adapter(shared, root / "adapter")
        merge.merge(shared, adapter, root / "merged", "auto")
        report = quantize.export(root / "merged", root / "gguf", "Q4_K_M", "jinmei", SYSTEM, keep_f16=True)
    return {"base": shared, "adapter": adapter, "merged": root / "merged", "gguf": root / "gguf",
            "f16": Path(report["f16_gguf"]), "q4": Path(report["gguf"]), "report": report}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny random llama through the stage CLIs, as the CI end-to-end run does."""
    root = tmp_path_factory.mktemp("tiny")
    with one_thread():
        return _build_tiny(root)


def _build_tiny(root: Path) -> dict[str, Path]:
    base.make_tiny_base(root / "base", seed=7, sizes=TINY)
    make_random_adapter(root / "base", root / "adapter", seed=1, std=0.2)
    params = write_params(root / "params.yaml", merge={"dtype": "auto"},
                          quantize={"type": "Q4_K_M", "name": "tiny", "keep_f16": True})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JINMEI_PARAMS", str(params))
        merge_stage.main(["--base", str(root / "base"), "--adapter", str(root / "adapter"), "--out", str(root / "merged")])
        quantize_stage.main(["--merged", str(root / "merged"), "--out-dir", str(root / "gguf"),
                             "--details", str(root / "metrics" / "details.json")])
    report = json.loads((root / "metrics" / "details.json").read_text(encoding="utf-8"))
    return {"root": root, "merged": root / "merged", "gguf": root / "gguf", "f16": Path(report["f16_gguf"]),
            "q4": Path(report["gguf"]), "report": report}


# ---------------------------------------------------------------- greedy agreement helpers

def prompt_ids(tokenizer, user: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                                        tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def llama_greedy(gguf_path: Path, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    with quantize.llama_log():
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, n_threads=1, n_threads_batch=1,
                              seed=0, verbose=False)
    try:
        answers = []
        for ids in prompts:
            answer = []
            for token in llm.generate(ids, temp=0.0, reset=True):
                answer.append(token)
                if token == llm.token_eos() or len(answer) >= max_tokens:
                    break
            answers.append(answer)
        return answers
    finally:
        llm.close()


def hf_agreement(model, ids: list[int], continuation: list[int]) -> dict:
    """How far HF greedy decoding follows llama.cpp's greedy `continuation`, from one forward pass.

    agreed: tokens before the first difference (if HF's argmax equals every continuation token, HF's own
    greedy decoding produces exactly that continuation); gap: HF's best logit minus its logit for
    llama.cpp's token there (tells a near-tie from a real difference); same_next: positions, given
    llama.cpp's text so far, where HF would pick the same next token.
    """
    with torch.no_grad():
        logits = model(torch.tensor([ids + continuation])).logits[0]
    steps = logits[len(ids) - 1: len(ids) - 1 + len(continuation)]
    predicted = steps.argmax(-1).tolist()
    same = [hf == cpp for hf, cpp in zip(predicted, continuation)]
    agreed = same.index(False) if False in same else len(same)
    gap = float(steps[agreed, predicted[agreed]] - steps[agreed, continuation[agreed]]) if agreed < len(same) else 0.0
    return {"agreed": agreed, "generated": len(continuation), "gap": round(gap, 4), "same_next": sum(same)}


def agreement(merged: Path, gguf_path: Path, max_tokens: int) -> list[dict]:
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    prompts = [prompt_ids(tokenizer, p) for p in PROMPTS]
    answers = llama_greedy(gguf_path, prompts, max_tokens)
    with one_thread():
        return [hf_agreement(model, ids, answer) for ids, answer in zip(prompts, answers)]


# ---------------------------------------------------------------- GGUF content

@pytest.mark.parametrize("which", ["real", "tiny"])
def test_gguf_metadata(which, request):
    from gguf import GGUFReader

    fixture = request.getfixturevalue(which)
    for path in (fixture["f16"], fixture["q4"]):
        fields = GGUFReader(path).fields
        value = lambda key: fields[key].contents()  # noqa: E731
        assert value("general.architecture") == "llama"
        assert value("tokenizer.ggml.model") == "gpt2"
        assert value("tokenizer.ggml.pre") == "smollm"
        assert (value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")) == (1, 2)
        assert value("tokenizer.ggml.padding_token_id") == 0
        assert value("tokenizer.ggml.add_bos_token") is False
        assert value("tokenizer.chat_template") == base.SMOLLM2_CHAT_TEMPLATE
    assert fixture["q4"].name.endswith("-Q4_K_M.gguf")


def test_quantize_report_real(real):
    report = real["report"]
    types = report["tensor_types"]
    assert types.get("Q4_K", 0) > 0 and types.get("F16", 0) == 0
    assert sum(types.values()) == 272
    # hidden 576 is no multiple of 256: llama.cpp stores most q4_K/q6_K matrices as q5_0/q8_0.
    assert report["fallbacks"]["by_kind"].get("q4_K->q5_0", 0) > 0
    assert report["fallbacks"]["count"] == len(report["fallbacks"]["tensors"]) > 0
    sizes = report["bytes"]
    assert sizes["gguf"] == real["q4"].stat().st_size < sizes["f16_gguf"] == real["f16"].stat().st_size
    assert abs(sizes["f16_gguf_estimate"] - sizes["f16_gguf"]) < 0.1 * sizes["f16_gguf"]
    assert report["tokenizer_parity"]["identical"] is True
    print(f"\nreal: f16 {sizes['f16_gguf'] / 1e6:.1f} MB, Q4_K_M {sizes['gguf'] / 1e6:.1f} MB "
          f"({report['bits_per_weight']} bits/weight), {report['seconds']}, types {types}")


def test_tiny_cli_outputs(tiny):
    names = sorted(p.name for p in tiny["gguf"].iterdir())
    assert names == ["Modelfile", "tiny-F16.gguf", "tiny-Q4_K_M.gguf"]
    assert sorted(p.name for p in tiny["root"].iterdir() if p.name.startswith(".")) == []


def test_keep_f16_false_deletes_f16(tiny):
    out = tiny["root"] / "gguf-q8"
    report = quantize.export(tiny["merged"], out, "q8_0", "tiny", SYSTEM, keep_f16=False)
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "tiny-Q8_0.gguf"]
    assert report["f16_gguf"] is None and report["type"] == "Q8_0"


# ---------------------------------------------------------------- merge correctness

def test_merge_adds_the_lora_delta(real):
    config = json.loads((real["adapter"] / "adapter_config.json").read_text())
    scaling = config["lora_alpha"] / config["r"]
    lora = load_file(real["adapter"] / "adapter_model.safetensors")
    base_weights = load_file(real["base"] / "model.safetensors")
    merged_weights = load_file(real["merged"] / "model.safetensors")
    name = "model.layers.3.self_attn.q_proj"
    a = lora[f"base_model.model.{name}.lora_A.weight"]
    b = lora[f"base_model.model.{name}.lora_B.weight"]
    expected = base_weights[f"{name}.weight"].float() + scaling * (b @ a)
    merged = merged_weights[f"{name}.weight"]
    assert merged.dtype == torch.bfloat16  # auto on CPU = the base's dtype
    assert (merged.float() - expected).abs().max() <= expected.abs().max() * 2 ** -7
    assert (merged != base_weights[f"{name}.weight"]).float().mean() > 0.5


# ---------------------------------------------------------------- greedy agreement

def test_f16_gguf_answers_like_merged_hf_real(real):
    results = agreement(real["merged"], real["f16"], max_tokens=32)
    print(f"\nreal f16: {results}")
    assert all(r["agreed"] == r["generated"] for r in results)


def test_f16_gguf_answers_like_merged_hf_tiny(tiny):
    """Random weights have near-ties everywhere: a difference is allowed only at one (gap < 0.5 logit)."""
    results = agreement(tiny["merged"], tiny["f16"], max_tokens=32)
    print(f"\ntiny f16: {results}")
    assert all(r["agreed"] == r["generated"] or r["gap"] < 0.5 for r in results)
    assert sum(r["same_next"] for r in results) >= 0.9 * sum(r["generated"] for r in results)


def test_q4_agreement_measured(real, tiny):
    """Quantization changes answers; measure how much, and fail only on a collapse."""
    lines = []
    for name, fixture in (("real", real), ("tiny", tiny)):
        results = agreement(fixture["merged"], fixture["q4"], max_tokens=32)
        total = sum(r["generated"] for r in results)
        same_next = sum(r["same_next"] for r in results) / total
        lines.append(f"{name} Q4_K_M: identical greedy prefix {sum(r['agreed'] for r in results)}/{total} tokens, "
                     f"same next token {same_next:.0%} of positions; {results}")
        if name == "real":  # a broken quantization agrees on almost nothing
            assert same_next >= 0.5, lines[-1]
    print("\n" + "\n".join(lines))


# ---------------------------------------------------------------- Modelfile

def parse_modelfile(text: str) -> dict[str, list[str]]:
    commands: dict[str, list[str]] = {}
    for match in re.finditer(r'^(\w+) (?:"""(.*?)"""|([^\n]*))$', text, re.M | re.S):
        commands.setdefault(match[1], []).append(match[2] if match[2] is not None else match[3])
    return commands


def test_modelfile(real):
    """The Modelfile's TEMPLATE rendered by Go's own text/template, fed what Ollama feeds it, is the HF render."""
    from jinmei.template.ollama import go_render

    text = (real["gguf"] / "Modelfile").read_text(encoding="utf-8")
    commands = parse_modelfile(text)
    assert commands["FROM"] == [f"./{real['q4'].name}"]
    assert commands["SYSTEM"] == [SYSTEM]
    assert sorted(commands["PARAMETER"]) == ['stop "<|im_end|>"', 'stop "<|im_start|>"', "temperature 0"]
    tokenizer = AutoTokenizer.from_pretrained(real["merged"])
    for user in (PROMPTS[0], "改行\nを含む\n\n記事"):
        conversation = [{"role": "system", "content": commands["SYSTEM"][0]}, {"role": "user", "content": user}]
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert go_render(commands["TEMPLATE"][0], {"system": SYSTEM, "messages": conversation[1:]}) == expected


# ---------------------------------------------------------------- bad input

def test_merge_errors(tiny, tmp_path):
    out = tmp_path / "merged"
    with pytest.raises(JinmeiError, match="adapter folder not found"):
        merge.merge(tiny["root"] / "base", tmp_path / "nothing", out)
    with pytest.raises(JinmeiError, match="base model folder not found"):
        merge.merge(tmp_path / "nothing", tiny["root"] / "adapter", out)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny["root"] / "adapter", corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(JinmeiError, match="cannot read the adapter"):
        merge.merge(tiny["root"] / "base", corrupt, out)
    (corrupt / "adapter_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(JinmeiError, match="adapter_config.json: not valid JSON"):
        merge.merge(tiny["root"] / "base", corrupt, out)
    changed = tmp_path / "changed-tokenizer"
    shutil.copytree(tiny["root"] / "adapter", changed)
    tokenizer = AutoTokenizer.from_pretrained(tiny["root"] / "base")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(changed)
    with pytest.raises(JinmeiError, match="tokenizer saved with the adapter differs"):
        merge.merge(tiny["root"] / "base", changed, out)
    other = base.make_tiny_base(tmp_path / "other-base", seed=1, sizes={**TINY, "hidden_size": 32})
    with pytest.raises(JinmeiError, match="does not fit the base"):
        merge.merge(other, tiny["root"] / "adapter", out)
    with pytest.raises(JinmeiError, match="merge.dtype"):
        merge.merge(tiny["root"] / "base", tiny["root"] / "adapter", out, "int4")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


def test_quantize_errors(tiny, tmp_path, monkeypatch):
    out = tmp_path / "gguf"
    with pytest.raises(JinmeiError, match="merged model folder not found"):
        quantize.export(tmp_path / "nothing", out, "Q4_K_M", "x", SYSTEM)
    with pytest.raises(JinmeiError, match=r"unknown type 'Q4_K_X'; valid: .*Q4_K_M.*Q8_0"):
        quantize.export(tiny["merged"], out, "Q4_K_X", "x", SYSTEM)
    with pytest.raises(JinmeiError, match='contains """'):
        quantize.export(tiny["merged"], out, "Q4_K_M", "x", 'say """hi"""')
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny["merged"], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(JinmeiError, match="not a readable safetensors file"):
        quantize.export(corrupt, out, "Q4_K_M", "x", SYSTEM)
    with monkeypatch.context() as patch:
        patch.setattr(quantize.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
        with pytest.raises(JinmeiError, match=r"1 MB free, the export needs up to [0-9]+ MB"):
            quantize.export(tiny["merged"], out, "Q4_K_M", "x", SYSTEM)
    monkeypatch.setenv("JINMEI_CONVERTER_DIR", str(tmp_path / "no-converter"))
    with pytest.raises(JinmeiError, match="bash scripts/install_converter.sh"):
        quantize.export(tiny["merged"], out, "Q4_K_M", "x", SYSTEM)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".gguf")]


def test_quantize_refuses_an_unsupported_template(tiny, tmp_path):
    other = tmp_path / "merged"
    shutil.copytree(tiny["merged"], other)
    config_path = other / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    (other / "chat_template.jinja").write_text(config["chat_template"], encoding="utf-8")
    with pytest.raises(JinmeiError, match="unsupported chat template family"):
        quantize.export(other, tmp_path / "gguf", "Q4_K_M", "x", SYSTEM)


def test_no_gguf_is_loaded_in_the_stage_process(tiny, tmp_path):
    """quantize (k-quantization, tokenizer parity) and sanity's vocab check load GGUFs in llama workers only: the
    stage's own process holds torch, beside which llama.cpp's CUDA build crashes (jinmei/infer/llama_worker.py)."""
    import subprocess
    import sys

    probe = ("import sys; from pathlib import Path; from jinmei.export import gguf as export; import torch; "
             "report = export.export(Path(sys.argv[1]), Path(sys.argv[2]), 'Q4_K_M', 'tiny', sys.argv[3]); "
             "found = export.vocab_check(Path(sys.argv[1]), sys.argv[3]); "
             "print(report['tokenizer_parity']['identical'], found['identical'], 'llama_cpp' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe, str(tiny["merged"]), str(tmp_path / "gguf"), SYSTEM],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-3:] == ["True", "True", "False"]


def test_quant_types_read_from_source_are_the_bindings_constants():
    found = {n.removeprefix("LLAMA_FTYPE_MOSTLY_"): getattr(llama_cpp, n) for n in dir(llama_cpp)
             if n.startswith("LLAMA_FTYPE_MOSTLY_")}
    assert quantize.quant_types() == found | {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32}
