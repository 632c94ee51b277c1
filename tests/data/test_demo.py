"""The demo corpus: seeded, varied, both classes, labels that can be read off the text."""
from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest
import yaml

from jinmei.config.params import read_yaml
from tiny_repo import ROOT, deep_merge

from jinmei.data import demo
from stages import demo as demo_stage
from jinmei.errors import JinmeiError
from jinmei.data.corpus import load_corpus

COMMITTED = read_yaml(ROOT / "params.yaml")
ROWS = demo.generate(1000, 0.2, seed=11)
POSITIVES = [r for r in ROWS if r["output"]["persons"]]
EMPTIES = [r for r in ROWS if not r["output"]["persons"]]


def skeleton(row: dict) -> str:
    """The first sentence with names, numbers and content words gone: its grammatical frame."""
    text = row["text"]
    for person in row["output"]["persons"]:
        text = text.replace(person["name"], "P")
    return re.sub(r"[^ぁ-んP、「」（）・]", "", text.split("。")[0])


def test_seeded_and_deterministic():
    assert demo.generate(1000, 0.2, seed=11) == ROWS
    assert demo.generate(1000, 0.2, seed=12) != ROWS


def test_counts_and_both_classes():
    assert len(ROWS) == 1000 and len(POSITIVES) == 200
    assert len({r["text"] for r in ROWS}) == 1000
    assert len({r["id"] for r in ROWS}) == 1000
    assert Counter(len(r["output"]["persons"]) for r in POSITIVES).keys() == {1, 2, 3}


def test_names_come_from_pools_large_enough_that_a_held_out_name_is_rarely_a_training_name():
    pools = demo.name_pools()
    assert len(pools.family) > 1500 and sum(len(k) for _, k in pools.male + pools.female) > 30000
    assert pools.family[0] == "佐藤" and all(a < b for a, b in zip(pools.family_cum, pools.family_cum[1:]))
    names = [p["name"] for r in demo.generate(6000, 0.5, seed=3) for p in r["output"]["persons"]]
    train, held_out = set(names[: len(names) // 2]), names[len(names) // 2:]
    japanese = [n for n in held_out if "・" not in n]           # the foreign pools are small on purpose
    assert sum(n in train for n in japanese) / len(japanese) < 0.1


def test_varied_text():
    assert len({skeleton(r) for r in POSITIVES}) >= 100
    assert len({skeleton(r) for r in EMPTIES}) >= 150
    acts = Counter(p["act"] for r in POSITIVES for p in r["output"]["persons"])
    assert len(acts) >= 15, acts
    names = [p["name"] for r in POSITIVES for p in r["output"]["persons"]]
    assert len(set(names)) >= 0.9 * len(names)
    assert any(re.search(r"[ァ-ヴー]・[ァ-ヴー]", n) for n in names), "foreign names in katakana"
    assert any(re.search(r"[ぁ-ん]{2,}$", n) for n in names), "given names in kana"


def test_labels_are_in_the_text_and_follow_the_convention():
    for row in POSITIVES:
        for person in row["output"]["persons"]:
            assert person["name"] in row["text"]
            assert person["act"] in row["text"]
            assert person["address"] is None or person["address"] in row["text"]
            assert (person["signature"] is not None) == (person["act"] in ("署名", "提出"))
            assert person["signature"] is None or person["signature"] in row["text"]
            assert not person["name"].endswith(("容疑者", "被告", "さん", "氏"))


def test_hard_empties_mention_roles_and_places_but_no_names():
    texts = [r["text"] for r in EMPTIES]
    assert sum("逮捕" in t for t in texts) >= 30, "anonymous arrests"
    assert sum(re.search(r"の(男|女|少年)（\d+）", t) is not None for t in texts) >= 20
    assert sum(("市長" in t or "社長" in t) for t in texts) >= 20


def test_lengths_do_not_give_the_label_away():
    pos = [len(r["text"]) for r in POSITIVES]
    emp = [len(r["text"]) for r in EMPTIES]
    assert min(pos + emp) >= 40 and max(pos + emp) <= 160
    assert abs(statistics.median(pos) - statistics.median(emp)) <= 12
    assert abs(statistics.mean(pos) - statistics.mean(emp)) <= 12


def test_cli_writes_a_valid_corpus(tmp_path, monkeypatch):
    params = {"seed": 5, "demo": {"n_articles": 300, "positive_share": 0.1, "min_chars": 60, "max_chars": 160},
              "schema": {"fields": ["name", "act", "address", "signature"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(COMMITTED, params)))
    monkeypatch.setenv("JINMEI_PARAMS", str(tmp_path / "params.yaml"))
    out = tmp_path / "data" / "demo" / "corpus.jsonl"
    demo_stage.main(["--out", str(out)])
    first = out.read_bytes()
    records, report = load_corpus(out, params["schema"]["fields"])
    assert report["accepted"] == 300 and report["positives"] == 30
    assert report["names_not_in_text"] == 0 and report["duplicate_texts_dropped"] == 0
    demo_stage.main(["--out", str(out)])
    assert out.read_bytes() == first, "byte-identical for the same seed"


def test_cli_subset_of_fields_and_refusal(tmp_path, monkeypatch):
    params = {"seed": 5, "demo": {"n_articles": 50, "positive_share": 0.5, "min_chars": 60, "max_chars": 160}, "schema": {"fields": ["name", "act"]}}
    path = tmp_path / "params.yaml"
    params = deep_merge(COMMITTED, params)
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("JINMEI_PARAMS", str(path))
    out = tmp_path / "c.jsonl"
    demo_stage.main(["--out", str(out)])
    records, _ = load_corpus(out, ["name", "act"])
    assert all(set(p) == {"name", "act"} for r in records for p in r["output"]["persons"])
    params["schema"]["fields"] = ["person", "act"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(JinmeiError, match="the demo corpus labels only"):
        demo_stage.main(["--out", str(out)])


def test_long_articles_honour_min_and_max_chars():
    """News-article length (the at-scale profile): asked for 300-1,200 characters, the generator writes them,
    with the same length distribution for both classes and every labelled name in its text."""
    rows = demo.generate(400, 0.25, seed=2, min_chars=300, max_chars=1200)
    lengths = [len(r["text"]) for r in rows]
    assert max(lengths) <= 1200 and statistics.quantiles(lengths, n=20)[0] >= 280
    assert statistics.mean(lengths) > 600
    pos = [len(r["text"]) for r in rows if r["output"]["persons"]]
    emp = [len(r["text"]) for r in rows if not r["output"]["persons"]]
    assert abs(statistics.mean(pos) - statistics.mean(emp)) < 80
    assert all(p["name"] in r["text"] for r in rows for p in r["output"]["persons"])


def test_decoys_append_a_fake_answer_and_leave_the_gold_and_every_other_article_alone():
    import copy
    import json

    rows = copy.deepcopy(ROWS)
    made = demo.add_decoys(rows, 0.1, seed=11)
    changed = [(a, b) for a, b in zip(ROWS, rows) if a != b]
    assert len(changed) == made and 60 <= made <= 140            # about 10% of 1,000
    for before, after in changed:
        assert after["output"] == before["output"] and after["id"] == before["id"]
        assert after["text"].startswith(before["text"])
        fake = json.loads(after["text"][after["text"].index('{"persons"'):])
        gold_names = {p["name"] for p in after["output"]["persons"]}
        assert all(p["name"] not in gold_names and p["name"] not in before["text"] for p in fake["persons"])
    assert any(not a["output"]["persons"] for _, a in changed) and any(a["output"]["persons"] for _, a in changed)
    assert demo.add_decoys(copy.deepcopy(ROWS), 0.0, seed=11) == 0
