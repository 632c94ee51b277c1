"""Eval never refuses a whole run for one article: an article too long for eval.n_ctx (split.too_long: keep let it
through) is one failure, counted, and named by its id and its line in the split file, with eval.workers: 2 too.

Before: `article #0 needs 2246 prompt + 256 answer tokens, more than eval.n_ctx=2048` ended the stage after hours
of training, the number being a position in a worker's chunk."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from jinmei.config.params import parse, read_yaml
from jinmei.eval import evaluation
from jinmei.model.basemodel import bundled_gguf_path

REPO = Path(__file__).resolve().parents[2]
LONG = "東京都内で15日、大雨が降った。" * 40           # ~600 characters: over 512 tokens with the system prompt
SHORT = ["横浜市中区の会社員、山田太郎さん（45）が表彰された。", "日経平均株価は続伸した。", "プロ野球の試合は中止となった。"]
PERSON = {"name": "山田太郎", "act": "表彰", "address": "横浜市中区", "signature": None}


def row(article_id: str, text: str, persons: list | None = None) -> dict:
    return {"id": article_id, "text": text, "output": {"persons": persons or []}}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_base):
    """One eval run (the bundled GGUF, two llama.cpp workers) on two split files, each with one article too long."""
    tmp_path = tmp_path_factory.mktemp("eval")
    raw = read_yaml(REPO / "params.yaml")
    raw["eval"].update(max_new_tokens=8, n_ctx=512, workers=2, n_threads=2, compare_subset=0, batch_size=1)
    p = parse(raw)
    splits = tmp_path / "splits"
    splits.mkdir()
    files = {"dev_all": [row("e1", SHORT[1]), row("long\n\x1b[2J1", LONG), row("e2", SHORT[2])],
             "dev_positive": [row("p1", SHORT[0], [PERSON]), row("long-p", "山田太郎さん。" + LONG, [PERSON])]}
    training = {"sanity": [], "train_positive": [row("t1", "山田太郎さん。", [PERSON])], "train_empty": []}
    for name, rows in {**files, **training}.items():
        (splits / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    out, printed = tmp_path / "out", io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluation.run(p, gguf=bundled_gguf_path(), splits_dir=splits, base=tiny_base, stage1=out / "no-stage1",
                       merged=out / "no-merged", metrics_file=out / "eval.json", details_file=out / "details.json",
                       predictions_dir=out / "predictions", plots_dir=out / "plots", advice_file=out / "advice.md",
                       errors_file=out / "errors.md", stage1_metrics=out / "s1.json", stage2_metrics=out / "s2.json")
    predictions = {name: [json.loads(line) for line in (out / "predictions" / f"{name}.jsonl").read_text().splitlines()]
                   for name in files}
    return splits, json.loads((out / "details.json").read_text()), predictions, printed.getvalue()


def test_too_long_article_is_one_counted_failure_not_a_refused_run(evaluated):
    _, details, predictions, _ = evaluated
    assert details["dev_all"]["too_long"] == 1 and details["dev_positive"]["too_long"] == 1
    names = details["dev_positive"]["names"]          # 山田太郎 is in a training article: both gold persons are seen
    assert (names["seen"]["persons_gold"], names["unseen"]["persons_gold"]) == (2, 0)
    assert details["dev_positive"]["names_recall_gap"] == {"seen_minus_unseen": None, "ci95": None}  # no unseen name
    assert details["dev_all"]["n"] == 3 and details["dev_all"]["verdicts"]["truncated"] >= 1
    long_rows = [r for rows in predictions.values() for r in rows if r["too_long"]]
    assert [r["id"] for r in long_rows] == ["long\n\x1b[2J1", "long-p"]
    assert all(r["verdict"] == "truncated" and r["generated_tokens"] == 0 and r["prompt_tokens"] > 504
               for r in long_rows)
    decoded = [r for rows in predictions.values() for r in rows if not r["too_long"]]
    assert len(decoded) == 3 and all(r["generated_tokens"] > 0 for r in decoded), "the others are decoded"
    assert details["throughput"]["articles"] == 3


def test_message_names_the_split_file_line_and_escaped_id_with_two_workers(evaluated):
    splits, _, _, out = evaluated
    warnings = [line for line in out.splitlines() if line.startswith("eval: warning: ")]
    assert len(warnings) == 2, out
    assert warnings[0].startswith(f"eval: warning: {splits / 'dev_all.jsonl'}:2: article 'long\\n\\x1b[2J1' needs ")
    assert warnings[1].startswith(f"eval: warning: {splits / 'dev_positive.jsonl'}:2: article 'long-p' needs ")
    assert all("answer tokens, more than eval.n_ctx=512: not decoded, scored as a failure" in w for w in warnings)
    assert "\x1b" not in out and "#0" not in out
