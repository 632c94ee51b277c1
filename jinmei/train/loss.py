"""The LM head only where the loss is (`train.loss_type: chunked_nll` or `dft` on the Unsloth backend).

A training row is an article and its answer, and the loss reads the answer alone: 1-5% of a row's tokens (the
`supervised_token_share` of each stage's metrics). Unsloth's fused loss still projects every position through the
LM head (vocabulary x hidden) and upcasts those logits to fp32, so ~97% of that work and memory traffic is thrown
away: at the 135M shape the head is a fifth of the model's matrix weights. Here the batch collator lists, on the
host and in the loader's worker processes, the positions whose next token is supervised; the model returns its
final hidden states (Unsloth's own `UNSLOTH_RETURN_HIDDEN_STATES` contract), only those rows go through the head,
and the loss is transformers' ForCausalLMLoss over the same tokens: fp32 logits, summed, divided by the supervised
tokens of the whole accumulated batch (`dft`: each token's loss weighted by its detached probability, as TRL's
`dft_loss`). Positions come from the host, so the gather needs no wait for the GPU. The plain backend gets the
same from TRL's own `chunked_nll` and `dft`.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from jinmei.errors import JinmeiError

IGNORE_INDEX = -100
HIDDEN_STATES_FLAG = "UNSLOTH_RETURN_HIDDEN_STATES"


def answer_positions(labels):
    """Flat indices into the (rows x length) hidden states whose next token is supervised, and those tokens."""
    following = labels[:, 1:]
    row, pos = (following != IGNORE_INDEX).nonzero(as_tuple=True)
    return row * labels.shape[1] + pos, following[row, pos]


class AnswerPositions:
    """Wraps the trainer's collator: each batch also holds answer_positions and answer_targets."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, examples):
        batch = self.collate(examples)
        batch["answer_positions"], batch["answer_targets"] = answer_positions(batch["labels"])
        return batch


def answer_loss(hidden, positions, targets, head, num_items_in_batch=None, transforms=(0, 0, 0),
                token_scaling=False):
    """Cross-entropy of the head's logits at `positions` only: sum / num_items_in_batch (else the mean), as
    transformers' ForCausalLMLoss computes it over every position with the others ignored.
    `transforms` = (softcapping, multiply, divide) of the model's logits, 0 = off (Gemma, Cohere, Granite);
    `token_scaling`: DFT, each token's loss times its probability, not differentiated."""
    import torch.nn.functional as F

    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    logits = head(rows.to(head.weight.dtype)).float()
    softcap, multiply, divide = transforms
    if multiply:
        logits = logits * multiply
    if divide:
        logits = logits / divide
    if softcap:
        logits = (logits / softcap).tanh() * softcap
    per_token = F.cross_entropy(logits, targets, reduction="none")
    if token_scaling:
        per_token = per_token * (-per_token.detach()).exp()
    if num_items_in_batch is None:
        return per_token.mean()
    loss = per_token.sum()
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


@contextlib.contextmanager
def hidden_states_out():
    """Unsloth's CausalLM forwards return the final (normed) hidden states as `.logits`, and no loss, inside."""
    prior = os.environ.get(HIDDEN_STATES_FLAG)
    os.environ[HIDDEN_STATES_FLAG] = "1"
    try:
        yield
    finally:
        if prior is None:
            os.environ.pop(HIDDEN_STATES_FLAG, None)
        else:
            os.environ[HIDDEN_STATES_FLAG] = prior


def logit_transforms(config) -> tuple:
    """(softcapping, multiply, divide) as Unsloth's own loss reads them; zeros where Unsloth is not installed."""
    try:
        from unsloth.models.llama import resolve_logit_transforms
    except ImportError:
        return (0, 0, 0)
    return tuple(float(v or 0) for v in resolve_logit_transforms(config))


@dataclass(frozen=True)
class AnswerHead:
    """What the loss needs from the model, resolved once per run (make_trainer), not at every step."""

    module: Any                         # the LM head: vocabulary x hidden
    transforms: tuple = (0, 0, 0)       # logit_transforms
    token_scaling: bool = False         # train.loss_type dft

    @classmethod
    def of(cls, model, loss_type: str) -> "AnswerHead":
        return cls(model.get_output_embeddings(), logit_transforms(model.config), loss_type == "dft")


def compute_loss(trainer, model, inputs, head: AnswerHead, return_outputs=False, num_items_in_batch=None):
    """Trainer.compute_loss for batches that hold answer positions."""
    positions, targets = inputs.pop("answer_positions"), inputs.pop("answer_targets")
    if not trainer.model_accepts_loss_kwargs:  # transformers then divides each micro-batch's mean by accumulation
        num_items_in_batch = None
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    with hidden_states_out():
        outputs = model(**inputs, use_cache=False, **extra)
    if outputs.loss is not None:  # a forward without the contract computed its own loss over every position
        if head.token_scaling:  # that loss is nll: dft cannot be had from it
            raise JinmeiError(f"{type(trainer.accelerator.unwrap_model(model)).__name__}: the forward ignored "
                              f"{HIDDEN_STATES_FLAG} and returned its own nll loss, so train.loss_type: dft cannot "
                              "run on this model under Unsloth; set train.loss_type: chunked_nll, or "
                              "train.backend: hf")
        if not getattr(trainer, "_warned_full_head", False):
            print(f"{type(trainer.accelerator.unwrap_model(model)).__name__}: the forward ignored "
                  f"{HIDDEN_STATES_FLAG}; the LM head runs on every position (same loss, more work)", flush=True)
            trainer._warned_full_head = True
        loss = outputs.loss
    else:
        loss = answer_loss(outputs.logits, positions, targets, head.module, num_items_in_batch, head.transforms,
                           head.token_scaling)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * trainer.accelerator.num_processes  # DDP averages the gradients; the count was global
    return (loss, outputs) if return_outputs else loss
