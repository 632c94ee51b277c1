"""The stages' trainer (make_trainer, sft_config) trains exactly as transformers' own loop with the old settings.

What it changes is host-side only: the token count stays on the device, no per-batch FLOP walk, a loss point
every train.logging_steps steps, batches collated by worker processes on a GPU. None of it may change a weight.
"""
import math

import pytest

torch = pytest.importorskip("torch")

ARTICLES = [
    ("東京都新宿区の会社員、山田太郎容疑者（45）が逮捕された。", [{"name": "山田太郎", "act": "逮捕",
                                                          "address": "東京都新宿区", "signature": None}]),
    ("明日の関東地方は晴れ、最高気温は２０度の見込み。", []),
    ("大阪府の無職、佐藤花子容疑者（31）を書類送検した。", [{"name": "佐藤花子", "act": "書類送検",
                                                       "address": "大阪府", "signature": None}]),
    ("新しい駅ビルが来月開業する。", []),
]
ROWS = [{"id": f"r{i}", "text": text, "output": {"persons": persons}}
        for i, (text, persons) in enumerate(ARTICLES * 3)]


def _train(tiny_base, p, tmp_path, name, *, stages_trainer: bool, **overrides):
    from datasets import Dataset
    from trl import SFTTrainer

    from jinmei.train.examples import encode_rows
    from jinmei.train.trainer import LoraSpec, load_model, make_trainer, sft_config

    torch.manual_seed(0)
    lora = LoraSpec(8, 16, 0.0, list(p.lora.target_modules))
    model, tokenizer = load_model(tiny_base, "hf", lora, 512, 0, grad_ckpt=False)
    examples, _ = encode_rows(ROWS, tokenizer, p.prompt.system, list(p.schema.fields), 512, "skip", workers=1)
    config = sft_config(p.train, 0, "hf", 1, output_dir=tmp_path / name, lr=1e-3, steps=6, per_device=2, accum=2,
                        save=False, **overrides)
    data = Dataset.from_list(examples)
    trainer = (make_trainer(model, tokenizer, config, data, []) if stages_trainer else
               SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer))
    trainer.train()
    tokens = trainer.flush_token_count() if stages_trainer else trainer.state.num_input_tokens_seen
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return weights, tokens, losses


def test_stages_trainer_changes_no_weight(tiny_base, params, tmp_path):
    from jinmei.config.params import parse

    p = parse(params)
    old = dict(logging_steps=1, logging_nan_inf_filter=True)  # what the stages asked of transformers before
    ref_w, ref_tokens, ref_losses = _train(tiny_base, p, tmp_path, "old", stages_trainer=False, **old)
    for name, overrides in (("new", {}), ("workers", {"dataloader_num_workers": 2})):
        w, tokens, losses = _train(tiny_base, p, tmp_path, name, stages_trainer=True, logging_steps=3, **overrides)
        assert tokens == ref_tokens > 0
        assert w.keys() == ref_w.keys()
        for k in w:
            assert torch.equal(w[k], ref_w[k]), f"{name}: {k} differs"
        # a point every 3 steps is the mean of its 3 steps' losses
        assert losses == pytest.approx([sum(ref_losses[i:i + 3]) / 3 for i in (0, 3)], rel=1e-5)


def test_logging_every():
    from jinmei.train.trainer import logging_every

    assert [logging_every("auto", n) for n in (1, 59, 100, 101, 938, 1170)] == [1, 1, 1, 2, 10, 12]
    assert logging_every(5, 1170) == 5


def test_nan_loss_stops_the_run():
    from types import SimpleNamespace

    from jinmei.errors import JinmeiError
    from jinmei.train.trainer import _callbacks

    progress = _callbacks(None, 10, "stage1", resume=False)
    state = SimpleNamespace(is_world_process_zero=True, global_step=7)
    progress.on_log(None, state, None, logs={"loss": 0.5})
    with pytest.raises(JinmeiError, match=r"loss is nan at step 7: lower stage1\.lr"):
        progress.on_log(None, state, None, logs={"loss": math.nan})
