"""Training examples: tokenized here (not by TRL), so masks and lengths are identical on every backend.

Prompt tokens get label -100, every answer token (the end-of-turn token included) keeps its id, and an
over-long example is cut on the article side or skipped, never cut in the answer.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from jinmei.template import chat
from jinmei.errors import JinmeiError
from jinmei.files import read_jsonl
from jinmei.template.prompt import answer_text

IGNORE = -100


@dataclass
class LengthReport:
    examples: int = 0
    cut: int = 0
    skipped: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def chat_format_of(tokenizer) -> chat.ChatFormat:
    """The tokenizer's chat format, worked out once per tokenizer object."""
    fmt = getattr(tokenizer, "_jinmei_chat_format", None)
    if fmt is None:
        fmt = chat.chat_format(tokenizer)
        tokenizer._jinmei_chat_format = fmt
    return fmt


def encode_example(tokenizer, system: str, article: str, answer: str) -> tuple[list[int], list[int]]:
    """input_ids and labels for one article: -100 on the prompt; the answer's ids and the template's end-of-turn
    token supervised (jinmei.template.chat: the template renders, article text never becomes a control token)."""
    enc = chat.encode(tokenizer, chat_format_of(tokenizer), system, article, answer)
    return enc.input_ids, [IGNORE] * enc.n_prompt + enc.input_ids[enc.n_prompt:]


# encode_rows fans out over CPU cores past this many rows (stage2 of the recipe encodes a 100k-row mixture: ~100 s
# on one core, which the GPU would spend idle); below it, or on 2 cores, it stays in-process.
PARALLEL_MIN_ROWS = 20_000
_FORKED: dict = {}  # what forked encoder processes inherit (a fork start shares the tokenizer without pickling it)


def _encode_for_pool(row) -> tuple[list[int], int]:
    tokenizer, system, fields = _FORKED["args"]
    input_ids, labels = encode_example(tokenizer, system, row["text"], answer_text(row["output"], fields))
    return input_ids, labels.count(IGNORE)


def _first_encodings(rows, tokenizer, system: str, fields: list[str], workers: int):
    """(input_ids, labels) of every row, in row order: the same pure function in-process or in forked workers."""
    if workers <= 1:
        for row in rows:
            yield encode_example(tokenizer, system, row["text"], answer_text(row["output"], fields))
        return
    import multiprocessing

    _FORKED["args"] = (tokenizer, system, fields)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for input_ids, n_prompt in pool.imap(_encode_for_pool, rows, chunksize=256):
                yield input_ids, [IGNORE] * n_prompt + input_ids[n_prompt:]
    finally:
        _FORKED.clear()


def encode_workers(n_rows: int) -> int:
    """Encoder processes for n_rows: this process's share of the cores (torchrun ranks on one host split them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(cores - 1, 12) if n_rows >= PARALLEL_MIN_ROWS and cores > 2 else 1


def encode_rows(rows, tokenizer, system: str, fields: list[str], max_len: int, too_long: str,
                workers: int | None = None):
    """Tokenize contract rows; handle the ones over max_len explicitly and count them."""
    report, examples = LengthReport(), []
    workers = encode_workers(len(rows)) if workers is None else workers
    for row, (input_ids, labels) in zip(rows, _first_encodings(rows, tokenizer, system, fields, workers)):
        answer = answer_text(row["output"], fields)
        text = row["text"]
        if len(input_ids) > max_len and too_long == "cut_article":
            article_ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            keep = len(article_ids) - (len(input_ids) - max_len)
            while keep > 0 and len(input_ids) > max_len:
                text = tokenizer.decode(article_ids[:keep])
                input_ids, labels = encode_example(tokenizer, system, text, answer)
                keep -= max(1, len(input_ids) - max_len)
            report.cut += len(input_ids) <= max_len
        if len(input_ids) > max_len:
            report.skipped += 1
            report.skipped_ids.append(row["id"])
            continue
        report.examples += 1
        report.tokens += len(input_ids)
        report.supervised_tokens += sum(1 for x in labels if x != IGNORE)
        # length = the prompt's tokens only: grouping batches by a length that includes the answer sorts
        # positives (long answers) apart from empties (short ones), and training on one-class batches
        # ends "always positive" or "always empty" (docs/corpus.md "Length grouping")
        examples.append({"input_ids": input_ids, "labels": labels, "length": labels.count(IGNORE)})
    if not examples:
        raise JinmeiError(
            f"no training example fits base.max_seq_length={max_len}; raise base.max_seq_length "
            f"or set train.too_long: cut_article"
        )
    return examples, report


def draw_mixture(pos_rows, empty_rows, size: int | None, positive_ratio: float, rng: random.Random, key: str):
    """A shuffled mixture with the asked positive share; size None = the largest the pools allow."""
    if size is None:
        if positive_ratio in (0.0, 1.0):
            size = len(empty_rows) if positive_ratio == 0.0 else len(pos_rows)
        else:
            size = int(min(len(pos_rows) / positive_ratio, len(empty_rows) / (1 - positive_ratio)))
    n_pos = round(size * positive_ratio)
    n_empty = size - n_pos
    if n_pos > len(pos_rows) or n_empty > len(empty_rows):
        raise JinmeiError(
            f"params.yaml: {key}.size={size} at positive_ratio={positive_ratio} needs {n_pos} positives and "
            f"{n_empty} empties, the training pools hold {len(pos_rows)} and {len(empty_rows)}; "
            f"lower {key}.size (or null for the largest mixture) or supply a larger corpus"
        )
    mixture = rng.sample(pos_rows, n_pos) + rng.sample(empty_rows, n_empty)
    rng.shuffle(mixture)
    return mixture


def load_pools(splits_dir: Path):
    return read_jsonl(splits_dir / "train_positive.jsonl"), read_jsonl(splits_dir / "train_empty.jsonl")
