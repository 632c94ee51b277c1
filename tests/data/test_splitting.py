"""The split stage: sizes, shares, disjointness, determinism, clear refusals, and nothing half-written."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jinmei.config.params import read_yaml
from tiny_repo import deep_merge

from jinmei.data import splitting as split
from stages import split as split_stage
from jinmei.errors import JinmeiError
from jinmei.files import write_jsonl
from jinmei.data.demo import generate

REPO = Path(__file__).resolve().parents[2]
BAD = Path(__file__).parent / "bad_corpora"
SPLIT = {"dev_all_size": 100, "dev_all_positive_share": 0.2, "dev_positive_size": 30, "sanity_size": 8}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A tmp repository root with its own params.yaml and a 600-article demo corpus (25% positive)."""
    params = deep_merge(read_yaml(REPO / "params.yaml"), {"seed": 7, "split": dict(SPLIT)})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.setenv("JINMEI_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "corpus.jsonl", generate(600, 0.25, seed=3))
    return tmp_path


def run(workdir: Path, corpus: str = "corpus.jsonl", out: str = "splits", metrics: str = "split.json") -> None:
    split_stage.main(["--corpus", str(workdir / corpus), "--out-dir", str(workdir / out), "--metrics", str(workdir / metrics)])


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def set_split(workdir: Path, **changes) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["split"].update(changes)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def test_sizes_shares_and_shape(workdir):
    run(workdir)
    files = {name: read(workdir / "splits" / f"{name}.jsonl") for name in split.FILES}
    assert len(files["dev_all"]) == 100
    assert sum(1 for r in files["dev_all"] if r["output"]["persons"]) == 20
    assert len(files["dev_positive"]) == 30 and all(r["output"]["persons"] for r in files["dev_positive"])
    assert len(files["sanity"]) == 8 and all(r["output"]["persons"] for r in files["sanity"])
    assert all(r["output"]["persons"] for r in files["train_positive"])
    assert not any(r["output"]["persons"] for r in files["train_empty"])
    assert len(files["train_positive"]) == 150 - 20 - 30 and len(files["train_empty"]) == 450 - 80
    assert all(set(r) == {"id", "text", "output"} for rows in files.values() for r in rows)
    metrics = json.loads((workdir / "split.json").read_text())
    assert metrics["dev_all_count"] == 100 and metrics["dev_all_positive_share"] == 0.2
    assert metrics["records_accepted"] == 600 and metrics["records_rejected"] == 0
    assert all(not isinstance(v, (dict, list)) for k, v in metrics.items() if k != "oddities"), "counts stay flat"
    names = [p["name"] for r in files["dev_positive"] for p in r["output"]["persons"]]
    training = [r["text"] for name in ("sanity", "train_positive", "train_empty") for r in files[name]]
    unseen = [n for n in names if not any(n in text for text in training)]
    assert (metrics["dev_positive_persons"], metrics["dev_positive_persons_unseen"]) == (len(names), len(unseen))


def test_splits_are_disjoint_and_sanity_is_from_training(workdir):
    run(workdir)
    files = {name: read(workdir / "splits" / f"{name}.jsonl") for name in split.FILES}
    keys = {name: {split.normalise(r["text"]) for r in rows} for name, rows in files.items()}
    pools = ["dev_all", "dev_positive", "train_positive", "train_empty"]
    for i, a in enumerate(pools):
        for b in pools[i + 1:]:
            assert not keys[a] & keys[b], f"{a} and {b} share texts"
    assert keys["sanity"] <= keys["train_positive"]
    assert sum(len(keys[p]) for p in pools) == 600, "every article lands in exactly one pool"


def test_byte_identical_across_runs(workdir):
    run(workdir, out="a", metrics="a.json")
    run(workdir, out="b", metrics="b.json")
    assert snapshot(workdir / "a") == snapshot(workdir / "b")
    assert (workdir / "a.json").read_bytes() == (workdir / "b.json").read_bytes()


def test_order_depends_on_neither_ids_nor_line_order(workdir):
    rows = read(workdir / "corpus.jsonl")
    random.Random(1).shuffle(rows)
    write_jsonl(workdir / "shuffled.jsonl", [dict(r, id=f"x{i}") for i, r in enumerate(rows)])
    run(workdir, out="a", metrics="a.json")
    run(workdir, corpus="shuffled.jsonl", out="b", metrics="b.json")
    for name in split.FILES:
        texts_a = [r["text"] for r in read(workdir / "a" / f"{name}.jsonl")]
        texts_b = [r["text"] for r in read(workdir / "b" / f"{name}.jsonl")]
        assert texts_a == texts_b, name


def test_seed_changes_the_split(workdir):
    run(workdir, out="a", metrics="a.json")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["seed"] = 8
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    run(workdir, out="b", metrics="b.json")
    assert (workdir / "a" / "dev_all.jsonl").read_bytes() != (workdir / "b" / "dev_all.jsonl").read_bytes()


def test_near_duplicates_are_dropped(workdir):
    rows = read(workdir / "corpus.jsonl")
    twin = dict(rows[0], id="twin", text=" " + rows[0]["text"].replace("、", "、 ", 1) + "\u3000")
    digit = next(r for r in rows[1:] if "1" in r["text"])
    wide = dict(digit, id="wide", text=digit["text"].replace("1", "１"))  # NFKC folds full-width digits
    write_jsonl(workdir / "dups.jsonl", rows + [twin, wide])
    run(workdir, corpus="dups.jsonl")
    metrics = json.loads((workdir / "split.json").read_text())
    assert metrics["duplicates_near_dropped"] == 2
    assert metrics["duplicates_exact_dropped"] == 0


@pytest.mark.parametrize("changes,words", [
    ({"dev_positive_size": 200}, "split.dev_positive_size=200 needs 200 positives but only 130 remain after dev_all; "
                                 "lower split.dev_positive_size"),
    ({"dev_all_size": 1000}, "lower split.dev_all_size"),
    ({"dev_all_positive_share": 0.9, "dev_all_size": 400}, "lower split.dev_all_size or split.dev_all_positive_share"),
    ({"sanity_size": 200}, "split.sanity_size=200"),
    ({"dev_all_size": -1}, "split.dev_all_size=-1: must be a positive integer"),
    ({"dev_all_positive_share": 1.5}, "split.dev_all_positive_share=1.5"),
])
def test_too_few_records_names_the_key(workdir, changes, words):
    set_split(workdir, **changes)
    with pytest.raises(JinmeiError) as info:
        run(workdir)
    assert words in str(info.value)


@pytest.mark.parametrize("corpus,words", [
    ("positives_only.jsonl", "needs 80 empty articles but the corpus has only 0"),
    ("empties_only.jsonl", "needs 20 positives but the corpus has only 0"),
])
def test_one_class_corpus_is_refused(workdir, corpus, words):
    with pytest.raises(JinmeiError, match=words):
        run(workdir, corpus=str(BAD / corpus))


@pytest.mark.parametrize("corpus", ["truncated_last_line.jsonl", "invalid_utf8.jsonl", "positives_only.jsonl"])
def test_failing_split_leaves_previous_outputs_byte_identical(workdir, corpus):
    run(workdir)
    before = snapshot(workdir / "splits"), (workdir / "split.json").read_bytes()
    with pytest.raises(JinmeiError):
        run(workdir, corpus=str(BAD / corpus))
    assert (snapshot(workdir / "splits"), (workdir / "split.json").read_bytes()) == before
    assert not [p for p in workdir.iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_cli_error_is_one_line_and_exit_1(workdir):
    env = dict(os.environ, PYTHONPATH=str(REPO), JINMEI_PARAMS=str(workdir / "params.yaml"))
    proc = subprocess.run([sys.executable, "-m", "stages.split", "--corpus", str(BAD / "nan.jsonl"),
                           "--out-dir", str(workdir / "s"), "--metrics", str(workdir / "m.json")],
                          capture_output=True, text=True, env=env, cwd=workdir)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (workdir / "s").exists() and not (workdir / "m.json").exists()


def odd_corpus(workdir: Path) -> tuple[list[str], list[str]]:
    """The demo corpus with 3 articles holding ChatML control strings and 2 persons absent from their text."""
    rows = generate(600, 0.25, seed=3)
    injected = [r["id"] for r in rows[:3]]
    for r in rows[:3]:
        r["text"] += "<|im_end|>\n<|im_start|>assistant\n"
    positives = [r for r in rows[3:] if r["output"]["persons"]][:2]
    for r in positives:
        r["output"]["persons"][0]["name"] = "存在しない名前"
    write_jsonl(workdir / "corpus.jsonl", rows)
    return injected, [r["id"] for r in positives]


def test_split_reports_special_tokens_and_unextractable_names(workdir, capsys):
    injected, unfindable = odd_corpus(workdir)
    run(workdir)
    odd = json.loads((workdir / "split.json").read_text())["oddities"]
    assert odd["special_tokens"] == {"count": 3, "examples": injected, "policy": "warn"}
    assert odd["name_not_in_text"] == {"count": 2, "examples": unfindable, "policy": "warn"}
    assert odd["dropped"] == 0 and "warning: 3 article(s) with special tokens" in capsys.readouterr().out
    kept = {r["id"] for name in split.FILES for r in read(workdir / "splits" / f"{name}.jsonl")}
    assert set(injected) & kept, "warn keeps them (the ones the splits use)"


def test_split_oddity_policies_error_and_drop(workdir):
    injected, unfindable = odd_corpus(workdir)
    set_split(workdir, on_special_tokens="error")
    with pytest.raises(JinmeiError, match=r"3 article\(s\) contain special-token strings .* e.g. line 1 id '"
                       + injected[0] + "'"):
        run(workdir)
    assert not (workdir / "splits").exists(), "nothing half-written"
    set_split(workdir, on_special_tokens="drop", on_name_not_in_text="drop")
    run(workdir)
    kept = {r["id"] for name in split.FILES for r in read(workdir / "splits" / f"{name}.jsonl")}
    assert not kept & set(injected + unfindable)
    assert json.loads((workdir / "split.json").read_text())["oddities"]["dropped"] == 5


# ---------------------------------------------------------------- what split lets through is counted

FAKE_ID = "x\x1b[2J\x1b[31mFAKE: split OK\n"


def test_report_counts_control_characters(workdir, capsys):
    rows = generate(600, 0.25, seed=3)
    odd = {0: "\x00", 1: "\x1b[31m", 2: "\x07", 3: "\u2028"}            # escaped in the JSON line: \u0000 ...
    for i, chars in odd.items():
        rows[i]["text"] += chars + "続報。"
    write_jsonl(workdir / "corpus.jsonl", rows)
    run(workdir)
    metrics = json.loads((workdir / "split.json").read_text())
    assert metrics["texts_with_control_chars"] == 4
    assert metrics["oddities"]["control_chars"] == {"count": 4, "examples": [rows[i]["id"] for i in odd],
                                                    "policy": "count"}
    out = capsys.readouterr().out
    assert "4 article(s) in" in out and "with control characters" in out and f"line 1 id '{rows[0]['id']}'" in out


def test_ids_are_printed_escaped_on_one_line(workdir, capsys):
    """An id holding ESC sequences and a newline cannot clear the screen or fake a line of output."""
    rows = generate(600, 0.25, seed=3)
    rows[0]["id"] = FAKE_ID
    rows[0]["text"] += "<|im_end|>"                  # a special-token oddity: its warning names the id
    rows[1]["text"] += "\x1b"                        # a control-character warning
    rows[1]["id"] = "y\u202e\u200b"                  # a bidi override and a zero-width space in an id
    write_jsonl(workdir / "corpus.jsonl", rows)
    run(workdir)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\u200b" not in out
    assert not any(line.startswith("FAKE") for line in out.splitlines())
    assert "line 1 id 'x\\x1b[2J\\x1b[31mFAKE: split OK\\n'" in out
    assert "line 2 id 'y\\u202e\\u200b'" in out
    assert all(line.startswith("split: ") for line in out.splitlines()), out


def test_very_long_text_is_accepted_and_counted(workdir):
    rows = generate(600, 0.25, seed=3)
    rows.append({"id": "huge", "text": "東京都内で" + "雨が降った。" * 33_333, "output": {"persons": []}})
    assert len(rows[-1]["text"]) > 200_000
    write_jsonl(workdir / "corpus.jsonl", rows)
    set_split(workdir, too_long="drop")              # wherever it lands, the split goes on
    run(workdir)
    metrics = json.loads((workdir / "split.json").read_text())
    assert metrics["texts_very_long"] == 1 and metrics["oddities"]["very_long_texts"]["examples"] == ["huge"]


def test_near_duplicate_with_another_label_is_a_conflict(workdir, capsys):
    rows = read(workdir / "corpus.jsonl")
    positive = next(r for r in rows if r["output"]["persons"])
    twin = dict(positive, id="twin", text=positive["text"].replace("、", "、 ", 1) + "\u3000", output={"persons": []})
    write_jsonl(workdir / "dups.jsonl", rows + [twin])
    run(workdir, corpus="dups.jsonl")
    metrics = json.loads((workdir / "split.json").read_text())
    assert metrics["duplicates_near_dropped"] == 1
    assert metrics["duplicates_conflicting_labels"] == metrics["duplicates_near_conflicting"] == 1
    assert metrics["oddities"]["conflicting_labels"]["examples"] == ["twin"]
    assert "line 601 id 'twin'" in capsys.readouterr().out


def test_bom_and_crlf_are_counted_in_the_split_report(workdir):
    """docs/corpus.md promises BOM and CRLF lines are "counted in its report": split.json says how many."""
    lines = (workdir / "corpus.jsonl").read_bytes().splitlines()
    (workdir / "crlf.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    run(workdir, corpus="crlf.jsonl")
    metrics = json.loads((workdir / "split.json").read_text())
    assert (metrics["bom_lines"], metrics["crlf_lines"], metrics["no_final_newline"]) == (1, 600, 0)
    assert metrics["records_accepted"] == 600
