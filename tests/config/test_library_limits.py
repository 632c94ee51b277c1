"""Every param is refused at the first stage if any later stage or library would refuse it, or silently read it
as something else; and every such refusal is backed by what the library really does, so the rules in
jinmei/config/params.py and jinmei/config/preflight.py cannot drift from torch, transformers, peft, numpy and
llama.cpp."""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from jinmei.config import params as P
from jinmei.config import preflight
from jinmei.errors import JinmeiError

ROOT = Path(__file__).resolve().parents[2]
BIG = 2**31                                   # one past int32: C libraries wrap it or crash
HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")


def changed(raw: dict, changes: dict) -> dict:
    out = copy.deepcopy(raw)
    for key, value in changes.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    return out


def run_stage_checks(raw: dict, stage: str, tmp_path: Path, base_dir=None) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    preflight.check(stage, base_dir=base_dir, params_file=path)


@pytest.fixture
def raw() -> dict:
    return P.read_yaml(ROOT / "params.yaml")


# (key, value, first stage that refuses it, words of the message, other keys changed with it)
# "demo" is the first stage: everything that params.yaml alone decides is refused there. The few exceptions need
# what only a later stage has: the tokenizer (split loads it) or the materialised base model (sanity).
WALK = [
    ("seed", -1, "demo", "must be an integer >= 0 (numpy.random.seed and transformers.set_seed take 0 .. 2**32 - 1"),
    ("seed", 2**32, "demo", "must be at most 4294967295 (numpy.random.seed"),
    ("corpus.path", 'data/my "best".jsonl', "demo", "holds '\"', which breaks dvc.yaml's quoted"),
    ("corpus.path", "data/$HOME.jsonl", "demo", "holds '$', which breaks"),
    ("corpus.path", "data/a`b`.jsonl", "demo", "holds '`'"),
    ("corpus.path", "data/a\nb.jsonl", "demo", "holds '\\n'"),
    ("corpus.path", " data/x.jsonl", "demo", "starts or ends with a space"),
    ("demo.n_articles", BIG, "demo", "must be at most 2147483647"),
    ("demo.positive_share", 1.5, "demo", "must be a number in [0, 1]"),
    ("demo.min_chars", 10, "demo", "must be an integer >= 40"),
    ("demo.max_chars", BIG, "demo", "must be at most"),
    ("demo.decoy_share", -0.1, "demo", "must be a number in [0, 1]"),
    ("schema.fields", ["name", "name"], "demo", "lists a name twice"),
    ("base.model", " ", "demo", "must be a non-empty string"),
    ("base.max_seq_length", 9000, "demo", "is beyond the 8192 tokens the base model was trained on"),
    ("base.max_seq_length", BIG, "demo", "must be at most"),
    ("base.save_dtype", "fp16", "demo", "must be one of float32, bfloat16, float16"),
    ("base.revision", " ", "demo", "must be a non-empty string"),
    ("base.trust_remote_code", "false", "demo", "must be true or false"),
    ("base.tiny", {"hidden_sise": 64}, "demo", "has unknown sizes ['hidden_sise']"),
    ("base.tiny", {"hidden_size": 60, "num_attention_heads": 8}, "demo",
     "hidden_size=60 must be num_attention_heads=8 x an even head size", {"base.model": "tiny-random"}),
    ("base.tiny", {"hidden_size": 12, "num_attention_heads": 4}, "demo", "x an even head size",
     {"base.model": "tiny-random"}),
    ("base.tiny", {"num_attention_heads": 4, "num_key_value_heads": 3}, "demo",
     "num_attention_heads=4 must be a multiple of num_key_value_heads=3", {"base.model": "tiny-random"}),
    ("prompt.system", "", "demo", "must be a non-empty string"),
    ("split.dev_all_size", BIG, "demo", "must be at most"),
    ("split.dev_all_positive_share", -0.1, "demo", "must be a number in [0, 1]"),
    ("split.dev_positive_size", 0, "demo", "must be a positive integer"),
    ("split.sanity_size", BIG, "demo", "must be at most"),
    ("split.on_special_tokens", "ignore", "demo", "must be one of warn, error, drop"),
    ("split.on_name_not_in_text", "skip", "demo", "must be one of warn, error, drop"),
    ("split.too_long", "truncate", "demo", "must be one of refuse, cut, drop, keep"),
    ("lora.r", 577, "demo", "is above the base model's hidden size 576"),
    ("lora.r", 65, "demo", "is above the base model's hidden size 64", {"base.model": "tiny-random"}),
    ("lora.r", BIG, "demo", "must be at most"),
    ("lora.alpha", 0.5, "demo", "must be a positive whole number (the trainer hands int(lora.alpha)"),
    ("lora.alpha", 16.5, "demo", "must be a positive whole number"),
    ("lora.dropout", 1.0, "demo", "must be a number in [0, 1)"),
    ("lora.target_modules", "q_proj", "demo", "must be a non-empty list of names"),
    ("lora.target_modules", ["q_proj", "qproj"], "sanity", "qproj match no module of the base model"),
    ("train.backend", "deepspeed", "demo", "must be one of auto, hf, unsloth"),
    ("train.processes", BIG, "demo", "must be 'auto' or at most"),
    ("train.global_batch", BIG, "demo", "must be at most"),
    ("train.per_device_batch", BIG, "demo", "must be at most"),
    ("train.gradient_checkpointing", "on", "demo", "must be 'auto' or true or false"),
    ("train.too_long", "truncate", "demo", "must be one of cut_article, skip"),
    ("train.warmup_ratio", 1.0, "demo", "must be a number in [0, 1) (transformers reads a warmup of 1 or more as"),
    ("train.lr_scheduler", "cosin", "demo", "unknown scheduler; valid: linear, cosine"),
    ("train.lr_scheduler", "reduce_lr_on_plateau", "demo", "needs an evaluation set"),
    ("train.lr_scheduler", "greedy", "demo", "needs an evaluation set"),
    ("train.lr_scheduler", "cosine_with_min_lr", "demo", "needs min_lr or min_lr_rate"),
    ("train.lr_scheduler", "cosine_warmup_with_min_lr", "demo", "needs min_lr or min_lr_rate"),
    ("train.lr_scheduler", "warmup_stable_decay", "demo", "needs num_decay_steps"),
    ("train.weight_decay", -0.1, "demo", "must be a number >= 0"),
    ("train.max_grad_norm", -1.0, "demo", "must be a positive number"),
    ("train.save_steps", 0.5, "demo", "must be a positive integer"),
    ("train.group_by_length", "true", "demo", "must be true or false"),
    ("train.loss_type", "mse", "demo", "must be one of nll, chunked_nll, dft"),
    ("train.optim", "sgd", "demo", "must be one of adamw_torch_fused, adamw_torch, adamw_8bit"),
    ("train.logging_steps", 0, "demo", "must be 'auto' or"),
    ("train.report_to", ["neptune"], "demo", "'neptune', not one of tensorboard"),
    ("sanity.steps", 0, "demo", "must be a positive integer"),
    ("sanity.global_batch", BIG, "demo", "must be at most"),
    ("sanity.lr", -1, "demo", "must be a positive number"),
    ("sanity.min_loss_ratio", -1, "demo", "must be a number >= 0"),
    ("sanity.min_exact_match", 1.5, "demo", "must be a number in [0, 1]"),
    ("sanity.max_new_tokens", 0, "demo", "must be a positive integer"),
    ("sanity.max_new_tokens", BIG, "demo", "must be at most"),
    ("sanity.answer_batch_size", BIG, "demo", "must be at most"),
    ("stage1.size", BIG, "demo", "must be at most"),
    ("stage1.positive_ratio", 1.5, "demo", "must be a number in [0, 1]"),
    ("stage1.epochs", 0, "demo", "must be a positive number"),
    ("stage1.lr", -1e-4, "demo", "must be a positive number"),
    ("stage1.lora_dropout", 1.0, "demo", "must be a number in [0, 1)"),
    ("stage2.size", BIG, "demo", "must be at most"),
    ("stage2.positive_ratio", -0.1, "demo", "must be a number in [0, 1]"),
    ("stage2.epochs", float("inf"), "demo", "must be a positive number"),
    ("stage2.lr", 0, "demo", "must be a positive number"),
    ("stage2.lora_dropout", 1.5, "demo", "must be a number in [0, 1)"),
    ("merge.dtype", "fp8", "demo", "must be one of auto, float32, bfloat16, float16"),
    ("quantize.type", "Q4_K_X", "demo", "unknown llama.cpp type"),
    ("quantize.name", "a" * 201, "demo", "is 201 characters; at most 200"),
    ("quantize.keep_f16", "false", "demo", "must be true or false"),
    ("eval.max_new_tokens", 2048, "demo", "leaves no room for the prompt in eval.n_ctx=2048"),
    ("eval.max_new_tokens", BIG, "demo", "must be at most"),
    ("eval.grammar", "on", "demo", "must be true or false"),
    ("eval.n_ctx", 4294969344, "demo", "must be at most 16777216 (more tokens than any model is trained on; "
                                       "llama.cpp reads n_ctx as 32 bits, so 4294969344 would silently become 2048)"),
    ("eval.n_ctx", 1000000001, "demo", "must be at most 16777216"),
    ("eval.n_ctx", 9000, "demo", "is beyond the 8192 tokens the base model was trained on "
                                 "(bundled:smollm2-135m-instruct): llama.cpp would run the model past it; "
                                 "set eval.n_ctx <= 8192"),
    ("eval.n_ctx", 300, "split", "too small: the system prompt and a one-line article already take"),
    ("eval.n_threads", 100000, "demo", "must be at most 512 (ggml's GGML_MAX_N_THREADS"),
    ("eval.workers", BIG, "demo", "must be 'auto' or at most"),
    ("eval.compare_subset", BIG, "demo", "must be at most"),
    ("eval.compare_batch_size", BIG, "demo", "must be at most"),
    ("eval.recall_drop_margin", 1.5, "demo", "must be a number in [0, 1]"),
    ("eval.quant_drop_margin", -0.1, "demo", "must be a number in [0, 1]"),
    ("eval.max_false_positive_rate", 2, "demo", "must be a number in [0, 1]"),
    ("eval.min_parse_rate", 95, "demo", "must be a number in [0, 1]"),
    ("eval.min_recall", 1.5, "demo", "must be a number in [0, 1]"),
    ("eval.min_person_f1", -0.1, "demo", "must be a number in [0, 1]"),
    ("eval.max_answered_empty_rate", 2, "demo", "must be a number in [0, 1]"),
    ("eval.batch_size", 256, "demo", "must be at most 255 (llama.cpp decodes at most 256 sequences"),
    ("eval.n_batch", 2**32 + 512, "demo", "must be at most 2147483647"),
    ("eval.n_batch", 6145, "demo", "is above the largest context the batched decode opens (eval.n_ctx x "
                                   "(eval.batch_size + 1) = 6144 tokens)", {"eval.batch_size": 2}),
]
ALL_KNOBS = {"seed"} | {f"{s}.{f.name}" for s, cls in P.SECTIONS.items() for f in dataclasses.fields(cls)}


def case_id(case) -> str:
    value = case[1]
    shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
    return f"{case[0]}={shown}" + (f"+{case[4]}" if len(case) > 4 else "")


def test_the_walk_covers_every_knob():
    assert {case[0] for case in WALK} == ALL_KNOBS, sorted(ALL_KNOBS ^ {case[0] for case in WALK})


@pytest.mark.parametrize("case", WALK, ids=[case_id(c) for c in WALK])
def test_every_knob_is_refused_at_the_first_stage_that_can_tell(raw, tmp_path, request, case):
    key, value, stage, words, *extra = case
    if key == "quantize.type" and not HAS_LLAMA:
        pytest.skip("llama-cpp-python is not installed")
    bad = changed(raw, {**(extra[0] if extra else {}), key: value})
    base_dir = request.getfixturevalue("tiny_base") if stage == "sanity" else None
    if stage != "demo":   # what params.yaml alone cannot tell passes the stages before
        earlier = P.STAGES[:P.STAGES.index(stage)]
        for before in earlier:
            run_stage_checks(bad, before, tmp_path)
    with pytest.raises(JinmeiError) as err:
        run_stage_checks(bad, stage, tmp_path, base_dir=base_dir)
    message = str(err.value)
    assert message.startswith(f"params.yaml {key}="), message     # names the key
    assert words in message and "\n" not in message, message


def test_the_training_backend_must_run_here(raw, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(JinmeiError, match=r"train.backend='unsloth': Unsloth needs an NVIDIA GPU"):
        run_stage_checks(changed(raw, {"train.backend": "unsloth"}), "sanity", tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(JinmeiError, match=r"train.processes=4: is more than the 2 visible GPU\(s\)"):
        run_stage_checks(changed(raw, {"train.processes": 4, "train.global_batch": 16}), "stage1", tmp_path)
    run_stage_checks(changed(raw, {"train.processes": 2}), "stage1", tmp_path)


def test_values_at_the_limits_pass(raw, tmp_path):
    run_stage_checks(changed(raw, {"seed": 0}), "demo", tmp_path)
    run_stage_checks(changed(raw, {"seed": P.SEED_MAX, "lora.alpha": 16.0, "lora.r": 576, "eval.n_ctx": 8192,
                                   "eval.n_threads": 512, "eval.batch_size": 255, "eval.n_batch": 8192 * 256,
                                   "base.max_seq_length": 8192, "train.warmup_ratio": 0.99}), "demo", tmp_path)


# ---------------------------------------------------------------- the libraries draw these lines, not jinmei


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40])
def test_seeds_outside_the_range_are_refused_by_numpy_and_transformers(seed):
    import numpy
    import transformers

    with pytest.raises(ValueError, match="Seed must be between 0 and 2\\*\\*32 - 1"):
        numpy.random.seed(seed)
    with pytest.raises(ValueError):
        transformers.set_seed(seed)
    assert P.SEED(seed)


def test_seeds_inside_the_range_are_taken_by_numpy_and_transformers():
    import numpy
    import transformers

    for seed in (0, P.SEED_MAX):
        numpy.random.seed(seed)
        transformers.set_seed(seed)
        assert P.SEED(seed) is None


def _sft_config(tmp_path, **train):
    from jinmei.train.trainer import sft_config

    tp = SimpleNamespace(**{"lr_scheduler": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0,
                            "save_steps": 10, "group_by_length": True, "loss_type": "nll", "report_to": [], "optim": "adamw_torch_fused",
                            "logging_steps": "auto", **train})
    return sft_config(tp, 0, "hf", 1, output_dir=tmp_path, lr=1e-3, steps=20, per_device=2, accum=1, save=False)


def test_scheduler_lists_match_transformers(tmp_path):
    """Every name the rule accepts builds the stages' SFTConfig and its scheduler; every other SchedulerType fails
    in transformers as the stages call it."""
    import torch
    from transformers import get_scheduler
    from transformers.trainer_utils import SchedulerType

    assert set(P.SCHEDULERS) | set(P.UNRUNNABLE_SCHEDULERS) == {s.value for s in SchedulerType}
    assert not set(P.SCHEDULERS) & set(P.UNRUNNABLE_SCHEDULERS)

    def build(name):
        config = _sft_config(tmp_path, lr_scheduler=name)
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        return get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=config.get_warmup_steps(20),
                             num_training_steps=20, scheduler_specific_kwargs=config.lr_scheduler_kwargs)

    for name in P.SCHEDULERS:
        build(name)
        assert P.scheduler(name) is None
    for name in P.UNRUNNABLE_SCHEDULERS:
        with pytest.raises((ValueError, TypeError)):
            build(name)
        assert P.scheduler(name)


def test_a_warmup_ratio_of_one_is_read_as_one_step(tmp_path):
    """sft_config passes train.warmup_ratio as warmup_steps: transformers takes values >= 1 as a step count."""
    assert _sft_config(tmp_path, warmup_ratio=0.5).get_warmup_steps(100) == 50
    assert _sft_config(tmp_path, warmup_ratio=1.0).get_warmup_steps(100) == 1       # not 100
    assert P.WARMUP(1.0) and P.WARMUP(0.5) is None


def test_a_fractional_lora_alpha_is_cut_by_the_trainer():
    from jinmei.train.trainer import TrainRun

    def alpha(value):
        p = SimpleNamespace(lora=SimpleNamespace(r=8, alpha=value, dropout=0.0, target_modules=["q_proj"]))
        return TrainRun("stage1", p, SimpleNamespace(lora_dropout=None), [], Path(".")).lora.alpha

    assert alpha(0.5) == 0 and alpha(16.5) == 16 and alpha(16.0) == 16
    assert P.whole_number(0.5) and P.whole_number(16.5) and P.whole_number(16.0) is None


def _tiny_llama(hidden=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))


def test_peft_gives_no_rank_beyond_the_hidden_size():
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(64), LoraConfig(r=80, lora_alpha=80, target_modules=["q_proj"]))
    a = next(m for n, m in model.named_modules() if n.endswith("q_proj")).lora_A["default"].weight
    assert a.shape == (80, 64) and int(torch.linalg.matrix_rank(a.detach())) <= 64 < 80


def test_peft_skips_a_target_module_that_matches_nothing():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "qproj"]))   # silently
    assert model.peft_config["default"].target_modules == {"q_proj", "qproj"}
    assert [n for n, _ in model.named_modules() if n.endswith("lora_A")] == \
        ["base_model.model.model.layers.0.self_attn.q_proj.lora_A"]
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(_tiny_llama(), LoraConfig(r=4, target_modules=["qproj"]))


def test_torch_refuses_what_the_number_rules_refuse():
    import torch

    with pytest.raises(ValueError):
        torch.nn.Dropout(p=1.5)
    assert not torch.nn.Dropout(p=1.0).train()(torch.ones(4)).any()        # dropout 1.0: the adapter learns nothing
    for kw in ({"lr": -1.0}, {"weight_decay": -0.1}):
        with pytest.raises(ValueError, match="Invalid"):
            torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], **kw)


def test_transformers_refuses_max_new_tokens_zero():
    from transformers import GenerationConfig

    with pytest.raises(ValueError, match="must be greater than 0"):
        GenerationConfig(max_new_tokens=0).validate(strict=True)


def test_tiny_sizes_match_the_base_stage():
    from transformers import LlamaConfig

    from jinmei.model.basemodel import DEFAULT_TINY, tiny_model

    assert set(P.TINY_SIZES) == {k for k, v in DEFAULT_TINY.items() if isinstance(v, int)}
    with pytest.raises(JinmeiError, match="unknown keys"):
        tiny_model({"hidden_sise": 64})
    with pytest.raises(Exception, match="not a multiple of the number of attention heads"):
        LlamaConfig(hidden_size=60, num_attention_heads=8)
    assert tiny_model({"num_hidden_layers": 1}).config.max_position_embeddings == preflight.TINY_CONTEXT


def test_a_long_gguf_name_does_not_fit_a_file_name(tmp_path):
    longest_type = max(preflight.quant_type_names() or ["IQ4_XS"], key=len)
    (tmp_path / f"{'a' * P.GGUF_NAME_MAX}-{longest_type}.gguf").write_bytes(b"")
    with pytest.raises(OSError):
        (tmp_path / f"{'a' * 251}-Q4_K_M.gguf").write_bytes(b"")


@pytest.mark.parametrize("path,breaks", [('data/my "best".jsonl', True), ("data/$HOME.jsonl", True),
                                         ("data/a`echo b`.jsonl", True), ("data/a\\", True),
                                         ("data/my corpus (2).jsonl", False)])
def test_corpus_paths_the_split_command_mangles(path, breaks):
    """dvc.yaml's split command with the path substituted, as DVC runs it: through the shell."""
    cmd = P.read_yaml(ROOT / "dvc.yaml")["stages"]["split"]["cmd"]
    assert '"${corpus.path}"' in cmd
    probe = cmd.replace("python -m stages.split", "printf '%s\\n'", 1).replace("${corpus.path}", path)
    done = subprocess.run(["sh", "-c", probe], capture_output=True, text=True)
    seen = done.stdout.splitlines()[1:2] if done.returncode == 0 else None
    assert (seen != [path]) == breaks
    assert bool(P.command_path(path)) == breaks


def test_a_nul_in_a_path_is_refused_by_the_os():
    with pytest.raises(ValueError, match="null"):
        open("data/a\x00b.jsonl")
    assert P.command_path("data/a\x00b.jsonl")


# ---------------------------------------------------------------- llama.cpp (a worker process, as the stages run it)

LLAMA_PROBE = r"""
import ctypes, json, sys
import llama_cpp
from jinmei.model.basemodel import bundled_gguf_path
from jinmei.config import params as P, preflight

out = {}
gguf = str(bundled_gguf_path())
llm = llama_cpp.Llama(model_path=gguf, n_ctx=4294969344, n_threads=1, verbose=False, seed=0)
out["n_ctx_asked_4294969344"] = llm.n_ctx()
out["n_ctx_train"] = llm._model.n_ctx_train()
out["n_embd"] = llm._model.n_embd()
out["max_parallel_sequences"] = llama_cpp.llama_max_parallel_sequences()
params = llama_cpp.llama_context_default_params()
params.n_seq_max, params.n_ctx, params.kv_unified = P.LLAMA_MAX_SEQ + 1, 256 * (P.LLAMA_MAX_SEQ + 1), False
out["ctx_with_too_many_sequences"] = bool(llama_cpp.llama_init_from_model(llm._model.model, params))
params = llama_cpp.llama_context_default_params()
params.n_seq_max, params.n_ctx, params.kv_unified = 3, 768, False
params.n_batch = params.n_ubatch = 100000
ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
out["n_batch_asked_100000_in_768"] = llama_cpp.llama_n_batch(ctx)
params.n_batch = 2**32 + 512
out["n_batch_field_asked_2**32+512"] = params.n_batch
params.n_ctx = 2**32 + 5
out["n_ctx_field_asked_2**32+5"] = params.n_ctx
print(json.dumps(out))
"""


@needs_llama
def test_llama_cpp_draws_the_eval_lines():
    done = subprocess.run([sys.executable, "-c", LLAMA_PROBE], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["n_ctx_asked_4294969344"] == 2048                       # wrapped to 32 bits, silently
    known = preflight.KNOWN_BASES["bundled:smollm2-135m-instruct"]
    assert (seen["n_ctx_train"], seen["n_embd"]) == (known["context"], known["hidden_size"])
    assert seen["max_parallel_sequences"] == P.LLAMA_MAX_SEQ
    assert seen["ctx_with_too_many_sequences"] is False                  # eval.batch_size 256 = 257 sequences
    assert seen["n_batch_asked_100000_in_768"] == 768                    # cut to the context
    assert seen["n_batch_field_asked_2**32+512"] == 512
    assert seen["n_ctx_field_asked_2**32+5"] == 5


@needs_llama
def test_llama_cpp_crashes_on_a_hundred_thousand_threads():
    probe = ("import llama_cpp; from jinmei.model.basemodel import bundled_gguf_path; "
             "llm = llama_cpp.Llama(model_path=str(bundled_gguf_path()), n_ctx=256, n_threads=100000, "
             "n_threads_batch=100000, verbose=False); llm.create_completion('a', max_tokens=1)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    assert P.SECTIONS["eval"].__dataclass_fields__["n_threads"].metadata["rule"](100000)


@needs_llama
def test_eval_prompt_budget_counts_what_llama_cpp_feeds(raw):
    """preflight's eval.n_ctx floor is the prompt llama.cpp builds from the GGUF (jinmei.infer.engine.GgufChat)."""
    from jinmei.model.basemodel import load_tokenizer

    p = P.parse(raw)
    hf = preflight.minimal_prompt_tokens(p, load_tokenizer(p.base.model))
    probe = ("import json, sys, llama_cpp; from jinmei.model.basemodel import bundled_gguf_path; "
             "from jinmei.infer.engine import GgufChat; "
             "llm = llama_cpp.Llama(model_path=str(bundled_gguf_path()), n_ctx=512, verbose=False); "
             "print(len(GgufChat.of(llm).prompt_ids(sys.argv[1], sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", probe, p.prompt.system, preflight.MINIMAL_ARTICLE],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == hf
    assert hf + p.eval.max_new_tokens > 300                              # eval.n_ctx: 300 could hold no article


def test_int32_fields_wrap_in_c():
    assert ctypes.c_int32(P.INT32_MAX + 1).value == -(2**31)             # what a C int makes of one more
    assert ctypes.c_uint32(4294969344).value == 2048


def test_limits_read_from_a_config_json(raw, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096,
                                                                     "hidden_size": 128}}), encoding="utf-8")
    p = P.parse(changed(raw, {"base.model": str(folder), "lora.r": 8}))
    limits = preflight.base_limits(p)
    assert (limits["context"], limits["hidden_size"]) == (4096, 128)
    with pytest.raises(JinmeiError, match=r"eval.n_ctx=8192: is beyond the 4096 tokens .*max_position_embeddings"):
        preflight.check_base_limits(P.parse(changed(raw, {"base.model": str(folder), "lora.r": 8,
                                                          "eval.n_ctx": 8192})), limits)
    assert preflight.base_limits(P.parse(changed(raw, {"base.model": "nobody/not-cached-anywhere"}))) == \
        {"context": None, "hidden_size": None, "source": None}
