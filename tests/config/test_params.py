"""jinmei.config.params and jinmei.config.preflight: every wrong params.yaml is refused before heavy work, in one line that
names the key; a stage reads only what dvc.yaml declares for it."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tiny_repo
from jinmei.config import params as P
from jinmei.config import preflight
from jinmei.errors import JinmeiError

ROOT = Path(__file__).resolve().parents[2]
STAGES = P.STAGES
DELETE = object()


def with_change(raw: dict, key: str, value) -> dict:
    """A copy of raw params with section.key set to value (value DELETE removes it)."""
    changed = copy.deepcopy(raw)
    *path, last = key.split(".")
    node = changed
    for part in path:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return changed


def refuse(raw: dict, stage: str, tmp_path: Path, base_dir=None) -> None:
    """parse + preflight of `stage`, as the stage's main() does."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    preflight.check(stage, base_dir=base_dir, params_file=path)


@pytest.fixture
def raw() -> dict:
    return P.read_yaml(ROOT / "params.yaml")


@pytest.mark.parametrize("stage", STAGES)
def test_committed_params_are_valid(stage, tmp_path, raw):
    refuse(raw, stage, tmp_path)


def test_tiny_params_are_valid(raw, tmp_path):
    refuse(tiny_repo.deep_merge(raw, tiny_repo.TINY_PARAMS), "demo", tmp_path)


# (key, bad value, stage that must refuse it, words the message must contain)
BAD_VALUES = [
    ("base.revision", "", "split", "base.revision='': must be a non-empty string"),
    ("train.report_to", "wandb", "demo", "train.report_to='wandb': must be a list of trackers"),
    ("stage2.lr", -1e-4, "stage2", "params.yaml stage2.lr=-0.0001: must be a positive number"),
    ("stage2.lr", 0, "stage2", "stage2.lr=0: must be a positive number"),
    ("stage2.lr", "fast", "stage2", "stage2.lr='fast': must be a positive number"),
    ("stage1.lr", float("nan"), "stage1", "stage1.lr=nan: must be a positive number"),
    ("sanity.lr", -1, "sanity", "sanity.lr=-1: must be a positive number"),
    ("stage1.epochs", 0, "stage1", "stage1.epochs=0: must be a positive number"),
    ("stage2.epochs", -0.5, "stage2", "stage2.epochs=-0.5: must be a positive number"),
    ("sanity.steps", 0, "sanity", "sanity.steps=0: must be a positive integer"),
    ("sanity.steps", 2.5, "sanity", "sanity.steps=2.5: must be a positive integer"),
    ("sanity.global_batch", 0, "sanity", "sanity.global_batch=0: must be a positive integer"),
    ("train.save_steps", 0, "stage1", "train.save_steps=0: must be a positive integer"),
    ("stage1.size", 0, "stage1", "stage1.size=0: must be a positive integer"),
    ("stage2.size", -5, "stage2", "stage2.size=-5: must be a positive integer"),
    ("split.dev_all_size", 0, "split", "split.dev_all_size=0: must be a positive integer"),
    ("split.sanity_size", -1, "split", "split.sanity_size=-1: must be a positive integer"),
    ("demo.n_articles", 0, "demo", "demo.n_articles=0: must be a positive integer"),
    ("base.max_seq_length", 0, "sanity", "base.max_seq_length=0: must be a positive integer"),
    ("lora.r", 0, "sanity", "lora.r=0: must be a positive integer"),
    ("eval.max_new_tokens", 0, "eval", "eval.max_new_tokens=0: must be a positive integer"),
    ("eval.compare_subset", -1, "eval", "eval.compare_subset=-1: must be an integer >= 0"),
    ("sanity.answer_batch_size", 0, "sanity", "sanity.answer_batch_size=0: must be a positive integer"),
    ("eval.compare_batch_size", 0, "eval", "eval.compare_batch_size=0: must be a positive integer"),
    ("stage1.positive_ratio", 1.5, "stage1", "stage1.positive_ratio=1.5: must be a number in [0, 1]"),
    ("stage2.positive_ratio", -0.1, "stage2", "stage2.positive_ratio=-0.1: must be a number in [0, 1]"),
    ("split.dev_all_positive_share", 2, "split", "split.dev_all_positive_share=2: must be a number in [0, 1]"),
    ("demo.positive_share", 1.1, "demo", "demo.positive_share=1.1: must be a number in [0, 1]"),
    ("demo.decoy_share", 1.5, "demo", "demo.decoy_share=1.5: must be a number in [0, 1]"),
    ("train.warmup_ratio", 1.2, "stage1", "train.warmup_ratio=1.2: must be a number in [0, 1)"),
    ("eval.min_parse_rate", 95, "eval", "eval.min_parse_rate=95: must be a number in [0, 1]"),
    ("sanity.min_exact_match", 1.01, "sanity", "sanity.min_exact_match=1.01: must be a number in [0, 1]"),
    ("lora.dropout", 1.0, "stage1", "lora.dropout=1.0: must be a number in [0, 1)"),
    ("stage1.lora_dropout", -0.1, "stage1", "stage1.lora_dropout=-0.1: must be a number in [0, 1)"),
    ("train.backend", "deepspeed", "stage1", "train.backend='deepspeed': must be one of auto, hf, unsloth"),
    ("train.too_long", "truncate", "stage1", "train.too_long='truncate': must be one of cut_article, skip"),
    ("train.loss_type", "mse", "stage1", "train.loss_type='mse': must be one of nll, chunked_nll, dft"),
    ("train.optim", "adamw_bnb_8bit", "stage1", "train.optim='adamw_bnb_8bit': must be one of adamw_torch_fused, "
                                                "adamw_torch, adamw_8bit"),
    ("train.logging_steps", -5, "stage1", "train.logging_steps=-5: must be 'auto' or"),
    ("train.processes", 0, "stage1", "train.processes=0: must be 'auto' or a positive integer"),
    ("train.lr_scheduler", "cosin", "stage1", "train.lr_scheduler='cosin': unknown scheduler; valid: linear, cosine"),
    ("train.gradient_checkpointing", "yes", "stage1",
     "train.gradient_checkpointing='yes': must be 'auto' or true or false"),
    ("base.save_dtype", "fp16", "base", "base.save_dtype='fp16': must be one of float32, bfloat16, float16"),
    ("merge.dtype", "fp8", "merge", "merge.dtype='fp8': must be one of auto, float32, bfloat16, float16"),
    ("quantize.type", "Q4_K_X", "quantize", "quantize.type='Q4_K_X': unknown llama.cpp type; valid: "),
    ("quantize.name", "my model", "quantize", "quantize.name='my model': must be letters, digits"),
    ("eval.grammar", "on", "eval", "eval.grammar='on': must be true or false"),
    ("eval.n_batch", 0, "eval", "eval.n_batch=0: must be a positive integer"),
    ("eval.min_recall", 1.5, "eval", "eval.min_recall=1.5: must be a number in [0, 1]"),
    ("eval.min_person_f1", -0.1, "eval", "eval.min_person_f1=-0.1: must be a number in [0, 1]"),
    ("eval.max_answered_empty_rate", 2, "eval", "eval.max_answered_empty_rate=2: must be a number in [0, 1]"),
    ("split.on_special_tokens", "ignore", "split", "split.on_special_tokens='ignore': must be one of warn, error, drop"),
    ("split.on_name_not_in_text", "skip", "split", "split.on_name_not_in_text='skip': must be one of warn, error"),
    ("split.too_long", "truncate", "split", "split.too_long='truncate': must be one of refuse, cut, drop, keep"),
    ("schema.fields", [], "demo", "schema.fields=[]: must be a non-empty list of names"),
    ("schema.fields", ["name", "act", "name"], "split", "schema.fields=['name', 'act', 'name']: lists a name twice"),
    ("base.tiny", 64, "base", "base.tiny=64: must be a mapping"),
    ("lora.target_modules", "q_proj", "stage1", "lora.target_modules='q_proj': must be a non-empty list of names"),
    ("prompt.system", "  ", "quantize", "prompt.system='  ': must be a non-empty string"),
    ("seed", "abc", "demo", "params.yaml seed='abc': must be an integer"),
    ("demo.min_chars", 10_000, "demo", "demo.min_chars=10000: is above demo.max_chars="),
    ("eval.max_new_tokens", 4096, "eval", "eval.max_new_tokens=4096: leaves no room for the prompt in eval.n_ctx"),
]


@pytest.mark.parametrize("key,value,stage,message", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _, _ in BAD_VALUES])
def test_bad_value_is_refused_naming_the_key(raw, tmp_path, key, value, stage, message):
    with pytest.raises(JinmeiError) as err:
        refuse(with_change(raw, key, value), stage, tmp_path)
    assert message in str(err.value)
    assert str(err.value).startswith("params.yaml ")


def test_every_knob_has_a_bad_value_test():
    import dataclasses

    tested = {key for key, *_ in BAD_VALUES}
    knobs = {f"{s}.{f.name}" for s, cls in P.SECTIONS.items() for f in dataclasses.fields(cls)}
    # knobs whose only wrong value is a missing / wrong-typed one (covered by the generic tests below)
    covered_elsewhere = {"corpus.path", "base.model", "base.trust_remote_code", "lora.alpha",
                         "train.global_batch", "train.per_device_batch", "train.weight_decay", "train.max_grad_norm",
                         "train.group_by_length", "sanity.min_loss_ratio", "sanity.max_new_tokens", "demo.max_chars",
                         "split.dev_positive_size", "stage2.lora_dropout", "quantize.keep_f16", "eval.n_ctx",
                         "eval.n_threads", "eval.workers", "eval.recall_drop_margin", "eval.quant_drop_margin",
                         "eval.max_false_positive_rate", "eval.batch_size"}
    assert knobs - tested <= covered_elsewhere, sorted(knobs - tested - covered_elsewhere)


def test_exponent_strings_from_dvc_exp_run_are_numbers(tmp_path):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8").replace("lr: 1.25e-5", "lr: 5e-05")
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert P.load_all(tmp_path / "params.yaml").stage2.lr == 5e-05


@pytest.mark.parametrize("global_batch,per_device,processes,fits", [
    (8, 3, 1, "1, 2, 4, 8"), (8, 4, 3, "none (change train.global_batch)"), (64, 4, 3, "none")])
def test_global_batch_must_divide(raw, tmp_path, global_batch, per_device, processes, fits):
    changed = with_change(with_change(with_change(raw, "train.global_batch", global_batch),
                                      "train.per_device_batch", per_device), "train.processes", processes)
    with pytest.raises(JinmeiError, match=r"train.global_batch=\d+: not divisible") as err:
        refuse(changed, "stage1", tmp_path)
    assert fits in str(err.value)


def test_sanity_global_batch_must_divide(raw, tmp_path):
    with pytest.raises(JinmeiError, match=r"sanity.global_batch=6: not divisible by train.per_device_batch=4 x 1"):
        refuse(with_change(raw, "sanity.global_batch", 6), "sanity", tmp_path)
    refuse(with_change(raw, "sanity.global_batch", 2), "sanity", tmp_path)  # per-device batch = min(4, 2)
    refuse(with_change(raw, "sanity.global_batch", None), "sanity", tmp_path)


def test_quantize_type_is_case_insensitive_like_the_stage(raw, tmp_path):
    assert "Q4_K_M" in preflight.quant_type_names()
    refuse(with_change(raw, "quantize.type", "q8_0"), "quantize", tmp_path)


@pytest.mark.parametrize("key,suggestion", [("stage2.lrr", "did you mean 'stage2.lr'?"),
                                            ("eval.gramar", "did you mean 'eval.grammar'?"),
                                            ("lora.alhpa", "did you mean 'lora.alpha'?")])
def test_typo_in_a_key_is_refused_with_a_suggestion(raw, tmp_path, key, suggestion):
    section, name = key.split(".")
    changed = copy.deepcopy(raw)
    changed[section][name] = 1
    for stage in ("demo", "eval"):  # wherever the typo is, every stage refuses it
        with pytest.raises(JinmeiError, match=suggestion):
            refuse(changed, stage, tmp_path)


def test_unknown_section_and_missing_key(raw, tmp_path):
    with pytest.raises(JinmeiError, match="params.yaml evl: unknown key; did you mean 'eval'"):
        refuse({**raw, "evl": {"grammar": True}}, "demo", tmp_path)
    with pytest.raises(JinmeiError, match=r"params.yaml stage2.lr: missing; add it to the 'stage2' section"):
        refuse(with_change(raw, "stage2.lr", DELETE), "demo", tmp_path)
    without_eval = {k: v for k, v in raw.items() if k != "eval"}
    with pytest.raises(JinmeiError, match="section 'eval' is missing"):
        refuse(without_eval, "demo", tmp_path)
    with pytest.raises(JinmeiError, match="must be a mapping of sections"):
        P.parse(["seed", 1])
    with pytest.raises(JinmeiError, match="params.yaml stage2=0.0005: must be a section"):
        P.parse({**raw, "stage2": 0.0005})


def test_quantize_without_llama_cpp(raw, tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "quant_type_names", lambda: None)
    refuse(raw, "stage1", tmp_path)  # llama.cpp is needed only from quantize on
    with pytest.raises(JinmeiError, match="llama-cpp-python is not installed"):
        refuse(raw, "quantize", tmp_path)


def test_base_model_missing_offline(raw, tmp_path, monkeypatch):
    monkeypatch.delenv("JINMEI_ALLOW_HUB", raising=False)
    sha = "0" * 40
    raw = with_change(raw, "base.revision", sha)
    for spec, words in [
        ("jinmei-tests/not-a-cached-model", f"neither a local folder nor in the Hugging Face cache at revision {sha}, "
                                            "and stages run offline. Fix: run `hf download "
                                            f"jinmei-tests/not-a-cached-model --revision {sha}`"),
    ]:
        with pytest.raises(JinmeiError, match="base.model"):
            refuse(with_change(raw, "base.model", spec), "base", tmp_path)
        try:
            refuse(with_change(raw, "base.model", spec), "base", tmp_path)
        except JinmeiError as e:
            assert words in str(e)
    raw = with_change(raw, "base.revision", None)
    for spec, words in [
        ("jinmei-tests/not-a-cached-model", "is a hub id without base.revision"),
        (str(tmp_path / "nowhere"), "not found"),
        (str(tmp_path), "has no config.json"),
        ("bundled:other-model", "unknown bundled model"),
    ]:
        with pytest.raises(JinmeiError, match="base.model") as err:
            refuse(with_change(raw, "base.model", spec), "base", tmp_path)
        assert words in str(err.value)
    refuse(with_change(raw, "base.model", "jinmei-tests/not-a-cached-model"), "split", tmp_path)


def test_base_model_that_is_available_offline(raw, tiny_base, tmp_path):
    refuse(with_change(raw, "base.model", str(tiny_base)), "base", tmp_path)


def test_max_seq_length_too_small_for_a_minimal_example(raw, tiny_base, tmp_path):
    from transformers import AutoTokenizer

    need = preflight.check_sequence_budget(P.parse(raw), AutoTokenizer.from_pretrained(tiny_base))
    with pytest.raises(JinmeiError, match=f"base.max_seq_length={need - 1}: too small"):
        refuse(with_change(raw, "base.max_seq_length", need - 1), "stage1", tmp_path, base_dir=tiny_base)
    refuse(with_change(raw, "base.max_seq_length", need), "stage1", tmp_path, base_dir=tiny_base)


def test_preflight_cli_reports_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text().replace("  lr: 1.25e-5", "  lrr: 1.25e-5"))
    done = subprocess.run([sys.executable, "-m", "jinmei.config.preflight"], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "JINMEI_PARAMS": str(tmp_path / "params.yaml")})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "stage2.lrr: unknown key; did you mean 'stage2.lr'?" in done.stderr
    ok = subprocess.run([sys.executable, "-m", "jinmei.config.preflight"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_a_stage_reads_only_what_dvc_yaml_declares(tmp_path):
    p = P.load("sanity", ROOT / "params.yaml")
    assert p.base.max_seq_length > 0 and p.train.global_batch > 0 and isinstance(p.seed, int)
    with pytest.raises(P.UndeclaredParamError, match="reads params base.model, which dvc.yaml does not list"):
        p.base.model
    with pytest.raises(P.UndeclaredParamError, match="reads params 'eval'"):
        p.eval
    q = P.load("quantize", ROOT / "params.yaml")
    assert q.prompt.system and q.quantize.type
    with pytest.raises(P.UndeclaredParamError):
        q.schema


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_loads_its_params_and_runs_preflight(stage):
    source = (ROOT / "stages" / f"{stage}.py").read_text(encoding="utf-8")
    assert f'params.load("{stage}")' in source and f'preflight.check("{stage}"' in source


@pytest.mark.parametrize("profile", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_profile_applies_and_is_valid(profile, tmp_path):
    """A profile is a delta: only keys params.yaml has, each different from it, and the result checks."""
    from jinmei.config.profile import apply

    delta, committed = P.read_yaml(profile), P.read_yaml(ROOT / "params.yaml")
    for section, keys in delta.items():
        for key, value in keys.items():
            assert committed[section][key] != value, f"{profile.name}: {section}.{key} repeats params.yaml"
    text = apply(profile, ROOT / "params.yaml")
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    p = P.load_all(tmp_path / "params.yaml")
    assert all(getattr(getattr(p, s), k) == v for s, keys in delta.items() for k, v in keys.items())
    assert "# " in text, "comments of params.yaml are kept"


def test_profile_cli_applies_in_place(tmp_path):
    import shutil

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    done = subprocess.run([sys.executable, "-m", "jinmei.config.profile", str(ROOT / "profiles" / "production.yaml"),
                           "--params", str(tmp_path / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert P.load_all(tmp_path / "params.yaml").base.max_seq_length == 4096
    (tmp_path / "bad.yaml").write_text("stage2:\n  lrr: 1\n", encoding="utf-8")
    before = (tmp_path / "params.yaml").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "jinmei.config.profile", str(tmp_path / "bad.yaml"),
                          "--params", str(tmp_path / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "stage2.lrr: not a key of params.yaml" in bad.stderr
    assert (tmp_path / "params.yaml").read_bytes() == before


@pytest.mark.parametrize("value, words", [
    ("wandb", "must be a list of trackers"),
    (["wandb", "wandb"], "twice"),
    (["neptune"], "'neptune', not one of"),
    ([1], "must be a list of trackers"),
])
def test_report_to_names_known_trackers_only(raw, tmp_path, value, words):
    raw["train"]["report_to"] = value
    with pytest.raises(JinmeiError, match=words):
        refuse(raw, "demo", tmp_path)


def test_a_tracker_that_is_not_installed_is_refused_at_the_first_training_stage(raw, tmp_path):
    import importlib.util

    missing = next((t for t in P.TRACKERS if importlib.util.find_spec(t) is None), None)
    if missing is None:
        pytest.skip("every tracker is installed here")
    raw["train"]["report_to"] = [missing]
    refuse(raw, "split", tmp_path)                  # stages that do not train do not need it
    with pytest.raises(JinmeiError, match=f"train.report_to.*{missing} is not installed"):
        refuse(raw, "sanity", tmp_path)
