"""The LM head on answer tokens only (jinmei.train.loss) gives transformers' loss and gradients.

Unsloth needs a CUDA GPU, so the Trainer test gives a real tiny model Unsloth's documented forward contract
(UNSLOTH_RETURN_HIDDEN_STATES=1: the final hidden states as `.logits`, no loss); the GPU benchmark
(benchmarks/step_host.py, variant full_head) compares the two losses under Unsloth itself.
"""
import math
import os
import types

import pytest

torch = pytest.importorskip("torch")

from test_host_costs import ROWS  # noqa: E402


def test_answer_positions_are_the_shifted_supervised_tokens():
    from jinmei.train.loss import answer_positions

    labels = torch.tensor([[-100, -100, 7, 8, -100], [-100, 5, -100, -100, -100]])
    positions, targets = answer_positions(labels)
    assert positions.tolist() == [1, 2, 5]      # row 0: hidden 1 -> 7, hidden 2 -> 8; row 1: hidden 0 -> 5
    assert targets.tolist() == [7, 8, 5]


def _batch(tiny_base, p, rows=ROWS[:4]):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from jinmei.train.examples import encode_rows
    from jinmei.train.loss import AnswerPositions
    from jinmei.train.trainer import LoraSpec, load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(tiny_base, "hf", LoraSpec(8, 16, 0.0, list(p.lora.target_modules)), 512, 0, False)
    examples, _ = encode_rows(rows, tokenizer, p.prompt.system, list(p.schema.fields), 512, "skip", workers=1)
    collate = AnswerPositions(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))
    return model, collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])


@pytest.mark.parametrize("num_items", [None, 57])
def test_answer_loss_equals_the_full_head_loss(tiny_base, params, num_items):
    from jinmei.config.params import parse
    from jinmei.train.loss import answer_loss

    model, batch = _batch(tiny_base, parse(params))
    assert batch["answer_targets"].numel() == int((batch["labels"][:, 1:] != -100).sum()) > 0
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    trainable = [t for t in model.parameters() if t.requires_grad]

    full = model(**inputs, labels=batch["labels"], **extra).loss
    full_grads = torch.autograd.grad(full, trainable)
    hidden = model.get_base_model().model(**inputs).last_hidden_state
    mine = answer_loss(hidden, batch["answer_positions"], batch["answer_targets"], model.get_output_embeddings(),
                       extra.get("num_items_in_batch"))
    mine_grads = torch.autograd.grad(mine, trainable)

    assert float(mine.detach()) == pytest.approx(float(full.detach()), rel=1e-6)
    for a, b in zip(mine_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("num_items", [None, 57])
def test_dft_answer_loss_equals_trls_dft_loss(tiny_base, params, num_items):
    """train.loss_type dft on Unsloth: the answer head weights each token as TRL's dft_loss does on the plain one."""
    from trl.trainer.sft_trainer import dft_loss

    from jinmei.config.params import parse
    from jinmei.train.loss import answer_loss

    model, batch = _batch(tiny_base, parse(params))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    count = None if num_items is None else torch.tensor(num_items)
    trainable = [t for t in model.parameters() if t.requires_grad]

    trl = dft_loss(model(**inputs), batch["labels"].clone(), count)
    trl_grads = torch.autograd.grad(trl, trainable)
    hidden = model.get_base_model().model(**inputs).last_hidden_state
    mine = answer_loss(hidden, batch["answer_positions"], batch["answer_targets"], model.get_output_embeddings(),
                       count, token_scaling=True)
    mine_grads = torch.autograd.grad(mine, trainable)

    plain = answer_loss(hidden, batch["answer_positions"], batch["answer_targets"], model.get_output_embeddings(),
                        count)
    assert float(mine.detach()) < float(plain.detach())  # weights below 1: a loss of its own, not nll renamed
    assert float(mine.detach()) == pytest.approx(float(trl.detach()), rel=1e-5)
    for a, b in zip(mine_grads, trl_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


def test_which_backend_and_loss_type_get_the_answer_head():
    from jinmei.train.trainer import answer_head

    def tp(loss_type):
        return types.SimpleNamespace(loss_type=loss_type)

    assert [answer_head("unsloth", tp(t)) for t in ("chunked_nll", "dft", "nll")] == ["chunked_nll", "dft", None]
    assert [answer_head("hf", tp(t)) for t in ("chunked_nll", "dft", "nll")] == [None, None, None]  # TRL's own


def test_logit_transforms_match_their_definition():
    from jinmei.train.loss import answer_loss

    hidden = torch.randn(1, 3, 4)
    head = torch.nn.Linear(4, 6, bias=False)
    positions, targets = torch.tensor([0, 2]), torch.tensor([1, 5])
    logits = head(hidden[0, [0, 2]]) * 2.0 / 4.0
    logits = torch.tanh(logits / 3.0) * 3.0
    expected = torch.nn.functional.cross_entropy(logits, targets)
    got = answer_loss(hidden, positions, targets, head, None, (3.0, 2.0, 4.0))
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def _unsloth_contract(model):
    """The tiny model's causal LM honours UNSLOTH_RETURN_HIDDEN_STATES as Unsloth's forwards do."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    causal_lm = model.get_base_model()
    plain = causal_lm.forward

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if os.environ.get("UNSLOTH_RETURN_HIDDEN_STATES") != "1":
            return plain(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        self.hidden_state_calls = getattr(self, "hidden_state_calls", 0) + 1
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return CausalLMOutputWithPast(loss=None, logits=hidden)

    causal_lm.forward = types.MethodType(forward, causal_lm)


@pytest.mark.parametrize("workers,loss_type", [(0, "chunked_nll"), (2, "chunked_nll"), (0, "dft")])
def test_trainer_with_the_answer_head_trains_as_the_full_head(tiny_base, params, tmp_path, workers, loss_type):
    """Same batches, gradient accumulation 2: the adapters agree to float rounding, the losses to 1e-6. The full
    head is TRL's nll (what Unsloth's own loss computes) or TRL's dft_loss (the plain backend's dft)."""
    from datasets import Dataset

    from jinmei.config.params import parse
    from jinmei.train.examples import encode_rows
    from jinmei.train.trainer import LoraSpec, load_model, make_trainer, sft_config

    p = parse(params)
    runs = {}
    for answer_head_loss in (None, loss_type):
        torch.manual_seed(0)
        model, tokenizer = load_model(tiny_base, "hf", LoraSpec(8, 16, 0.0, list(p.lora.target_modules)), 512, 0,
                                      False)
        _unsloth_contract(model)
        examples, _ = encode_rows(ROWS, tokenizer, p.prompt.system, list(p.schema.fields), 512, "skip", workers=1)
        full_head_loss = {"loss_type": "dft"} if loss_type == "dft" and answer_head_loss is None else {}
        config = sft_config(p.train, 0, "unsloth", 1, output_dir=tmp_path / str(answer_head_loss), lr=1e-3,
                            steps=4, per_device=2, accum=2, save=False, logging_steps=1,
                            dataloader_num_workers=workers, **full_head_loss)
        if answer_head_loss:  # what the Unsloth backend hands TRL: the answer head's loss is make_trainer's
            assert config.loss_type == "nll"
        trainer = make_trainer(model, tokenizer, config, Dataset.from_list(examples), [], answer_head_loss)
        trainer.train()
        assert os.environ.get("UNSLOTH_RETURN_HIDDEN_STATES") is None  # restored after every forward
        assert getattr(model.get_base_model(), "hidden_state_calls", 0) == (8 if answer_head_loss else 0)
        runs[bool(answer_head_loss)] = ({k: v.detach().clone() for k, v in model.named_parameters()
                                         if v.requires_grad},
                                        [e["loss"] for e in trainer.state.log_history if "loss" in e])
    (full_w, full_losses), (mine_w, mine_losses) = runs[False], runs[True]
    assert mine_losses == pytest.approx(full_losses, rel=1e-6)
    for k in full_w:
        torch.testing.assert_close(mine_w[k], full_w[k], rtol=1e-4, atol=1e-6)


def _trainer_without_the_contract(tiny_base, params, tmp_path, answer_head_loss):
    """A real tiny model whose forward ignores UNSLOTH_RETURN_HIDDEN_STATES and returns its own nll loss."""
    from datasets import Dataset

    from jinmei.config.params import parse
    from jinmei.train.examples import encode_rows
    from jinmei.train.trainer import LoraSpec, load_model, make_trainer, sft_config

    p = parse(params)
    model, tokenizer = load_model(tiny_base, "hf", LoraSpec(8, 16, 0.0, list(p.lora.target_modules)), 512, 0, False)
    examples, _ = encode_rows(ROWS[:4], tokenizer, p.prompt.system, list(p.schema.fields), 512, "skip", workers=1)
    config = sft_config(p.train, 0, "unsloth", 1, output_dir=tmp_path, lr=1e-3, steps=2, per_device=2, accum=1,
                        save=False, logging_steps=1)
    return make_trainer(model, tokenizer, config, Dataset.from_list(examples), [], answer_head_loss)


def test_a_forward_without_the_contract_trains_on_its_own_loss_and_says_so(tiny_base, params, tmp_path, capsys):
    trainer = _trainer_without_the_contract(tiny_base, params, tmp_path, "chunked_nll")
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("the forward ignored UNSLOTH_RETURN_HIDDEN_STATES") == 1
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_dft_on_a_forward_without_the_contract_stops_instead_of_training_nll(tiny_base, params, tmp_path):
    from jinmei.errors import JinmeiError

    trainer = _trainer_without_the_contract(tiny_base, params, tmp_path, "dft")
    with pytest.raises(JinmeiError, match="train.loss_type: dft cannot run"):
        trainer.train()
