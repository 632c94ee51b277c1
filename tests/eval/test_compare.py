"""`jinmei-compare` on hand-built prediction folders: paired tests whose p values are known in closed form, a refusal
for runs on different articles, and the command line's exit codes and JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jinmei.errors import JinmeiError
from jinmei.eval import compare

FIELDS = ["name", "act", "address", "signature"]
REPO = Path(__file__).resolve().parents[2]
YAMADA = {"name": "山田太郎", "act": "表彰", "address": "横浜市中区", "signature": None}
EMPTY_ANSWER = json.dumps({"persons": []})
YAMADA_ANSWER = json.dumps({"persons": [YAMADA]}, ensure_ascii=False)


def prediction(article_id, gold_persons, raw, truncated=False):
    """The keys of a prediction row that compare reads (eval writes more: verdict, parsed, text, ...)."""
    return {"id": article_id, "raw": raw, "truncated": truncated, "gold": {"persons": gold_persons}, "verdict": "?"}


def write_run(folder: Path, dev_all: list[dict], dev_positive: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("dev_all", dev_all), ("dev_positive", dev_positive)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                              encoding="utf-8")
    return folder


def run_from(folder: Path) -> dict:
    return compare.load_run(str(folder), FIELDS)


def empties(n: int, false_positives: set[int]) -> list[dict]:
    """n articles without persons; those in false_positives answered with a person."""
    return [prediction(f"e{i}", [], YAMADA_ANSWER if i in false_positives else EMPTY_ANSWER) for i in range(n)]


def positives(n: int, found: set[int]) -> list[dict]:
    return [prediction(f"p{i}", [YAMADA], YAMADA_ANSWER if i in found else EMPTY_ANSWER) for i in range(n)]


def decision(pair: dict, name: str) -> dict:
    return next(d for d in pair["decisions"] if d["decision"] == name)


def test_identical_runs_are_not_distinguishable(tmp_path):
    rows = (empties(10, {1, 2}), positives(8, {0, 3, 5}))
    a, b = run_from(write_run(tmp_path / "a", *rows)), run_from(write_run(tmp_path / "b", *rows))
    pair = compare.compare_pair(a, b, ("a", "b"))
    assert [d["p"] for d in pair["decisions"]] == [1.0, 1.0, 1.0]
    assert all(d["a_only"] == d["b_only"] == 0 for d in pair["decisions"])
    assert pair["person_f1"]["ci95"] == [0.0, 0.0] and pair["person_f1"]["difference"] == 0.0
    assert pair["verdict_changes"] == {"dev_all": [], "dev_positive": []}
    assert pair["verdict"].startswith("a and b are not distinguishable at the 5% level")


def test_twenty_discordant_pairs_one_way():
    """B finds the person in 20 articles A answers empty, and nothing the other way: p = 2 · 0.5^20."""
    def run(found: set[int]) -> dict:
        lines = "\n".join(json.dumps(r) for r in positives(30, found))
        return {"dev_all": {}, "dev_positive": compare.outcomes(compare.read_predictions("x", lines), FIELDS)}

    a, b = run(set(range(20, 30))), run(set(range(30)))
    pair = compare.compare_pair(a, b, ("a", "b"), resamples=500)
    found = decision(pair, "found")
    assert (found["articles"], found["a"], found["b"], found["a_only"], found["b_only"]) == (30, 10, 30, 0, 20)
    expected = 2 * 0.5 ** 20                                        # the binomial tail, by hand
    assert found["p"] == pytest.approx(expected, rel=1e-12)
    assert decision(pair, "false_positive")["articles"] == 0 and decision(pair, "false_positive")["p"] == 1.0
    low, high = pair["person_f1"]["ci95"]
    assert 0 < low <= pair["person_f1"]["difference"] <= high       # F1 0.5 → 1.0: B better, interval above 0
    assert pair["verdict"].startswith("b is better on recall on Dev-Positive (10 vs 30 of 30, McNemar p = 1.9e-06)")
    assert "person F1" in pair["verdict"] and "trade-off" not in pair["verdict"]


def test_ten_against_ten_is_p_one(tmp_path):
    """A has 10 false positives B has not, B 10 others A has not: p = 1, and the F1 moves not at all."""
    a = run_from(write_run(tmp_path / "a", empties(30, set(range(10))), positives(5, {0})))
    b = run_from(write_run(tmp_path / "b", empties(30, set(range(10, 20))), positives(5, {0})))
    pair = compare.compare_pair(a, b, ("a", "b"))
    fp = decision(pair, "false_positive")
    assert (fp["articles"], fp["a"], fp["b"], fp["a_only"], fp["b_only"], fp["p"]) == (30, 10, 10, 10, 10, 1.0)
    exact = decision(pair, "exact")
    assert (exact["a_only"], exact["b_only"], exact["p"]) == (10, 10, 1.0)
    assert "not distinguishable" in pair["verdict"]


def test_mcnemar_p_against_the_binomial_by_hand():
    from math import comb

    for a_only, b_only in [(0, 0), (0, 1), (3, 7), (5, 5), (1, 12), (40, 25)]:
        n = a_only + b_only
        by_hand = 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n)
        assert compare.mcnemar_p(a_only, b_only) == pytest.approx(by_hand, rel=1e-12)
    assert compare.mcnemar_p(3, 7) == compare.mcnemar_p(7, 3) == pytest.approx(0.34375)   # 2·(1+10+45+120)/1024


def test_mcnemar_p_is_scipys_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for a_only, b_only in [(0, 1), (3, 7), (5, 5), (1, 12), (40, 25), (0, 20)]:
        expected = stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert compare.mcnemar_p(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_bootstrap_is_seeded_and_counts_persons_not_articles(tmp_path):
    a = run_from(write_run(tmp_path / "a", [], positives(40, set(range(0, 40, 2)))))
    b = run_from(write_run(tmp_path / "b", [], positives(40, set(range(0, 40, 2)) | {1, 3, 5})))
    first = compare.compare_pair(a, b, ("a", "b"), resamples=300, seed=7)["person_f1"]
    assert compare.compare_pair(a, b, ("a", "b"), resamples=300, seed=7)["person_f1"] == first
    assert (first["a"], first["b"]) == (pytest.approx(2 * 20 / (20 + 40)), pytest.approx(2 * 23 / (23 + 40)))
    assert first["ci95"][0] <= first["difference"] <= first["ci95"][1]


def test_runs_on_different_articles_are_refused(tmp_path):
    a = run_from(write_run(tmp_path / "a", empties(5, set()), positives(3, set())))
    b = run_from(write_run(tmp_path / "b", empties(4, set()), positives(3, set())))
    with pytest.raises(JinmeiError, match=r"a and b are not the same dev articles: dev_all has 1 only in a "
                                          r"\(e.g. 'e4'\) and 0 only in b"):
        compare.compare_pair(a, b, ("a", "b"))
    other_gold = positives(3, set())
    other_gold[1]["gold"]["persons"] = []
    c = run_from(write_run(tmp_path / "c", empties(5, set()), other_gold))
    with pytest.raises(JinmeiError, match="dev_positive article 'p1' has different gold persons"):
        compare.compare_pair(a, c, ("a", "c"))


def test_a_broken_prediction_file_is_named_by_line(tmp_path):
    folder = write_run(tmp_path / "a", empties(2, set()), positives(1, set()))
    (folder / "dev_all.jsonl").write_text('{"id": "e0"}\n', encoding="utf-8")
    with pytest.raises(JinmeiError, match=r"dev_all.jsonl:1: a prediction row needs"):
        run_from(folder)
    twice = json.dumps(empties(1, set())[0])
    (folder / "dev_all.jsonl").write_text(twice + "\n" + twice + "\n", encoding="utf-8")
    with pytest.raises(JinmeiError, match=r"dev_all.jsonl:2: article 'e0' again \(first on line 1\)"):
        run_from(folder)
    (folder / "dev_all.jsonl").unlink()
    with pytest.raises(JinmeiError, match=r"dev_all.jsonl: not found; a folder run holds"):
        run_from(folder)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JINMEI_PARAMS": str(REPO / "params.yaml")}
    return subprocess.run([sys.executable, "-m", "jinmei.eval.compare", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_command_line(tmp_path):
    a = write_run(tmp_path / "a", empties(10, {1}), positives(25, set(range(5, 25))))
    b = write_run(tmp_path / "b", empties(10, {1}), positives(25, set(range(25))))
    c = write_run(tmp_path / "c", empties(9, set()), positives(25, set()))

    done = cli(str(a), str(b), "--json", "--resamples", "200", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == [str(a), str(b)] and len(report["pairs"]) == 1
    assert decision(report["pairs"][0], "found")["p"] == pytest.approx(2 * 0.5 ** 5)
    assert report["pairs"][0]["verdict_changes"]["dev_positive"] == []     # ok → ok: answers differ, verdicts not

    done = cli(str(a), str(b), str(a), cwd=tmp_path)                       # three runs: three pairs, markdown
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n## ") + done.stdout.startswith("## ") == 3
    assert "| recall: names someone (Dev-Positive) | 25 | 20 | 25 | 0 | 5 | 0.0625 |" in done.stdout
    assert f"**{str(a)} and {str(a)} are not distinguishable at the 5% level" in done.stdout.replace("\\", "")

    done = cli(str(a), str(c), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "not the same dev articles" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr

    done = cli(str(a), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == ("error: jinmei-compare: give two runs or more; see "
                                                    "`jinmei-compare --help`\n")
    done = cli(str(a), str(b), "--resamples", "0", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1

    done = cli(str(a), "no-such-rev-xyz", cwd=tmp_path)                    # not a folder, so a rev: not in a repo
    assert done.returncode == 1 and done.stderr.startswith("error: no-such-rev-xyz: cannot read "
                                                           "data/predictions/dev_all.jsonl there (")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_bootstrap_interval_matches_one_computed_by_hand(tmp_path):
    """The same paired bootstrap written out plainly (Python's random, one draw at a time): with thousands of
    resamples the two percentile intervals agree to about a hundredth."""
    import random

    found_a, found_b = set(range(0, 40, 2)), (set(range(0, 40, 2)) - {0, 2}) | {1, 3, 5, 7, 9}
    a = run_from(write_run(tmp_path / "a", [], positives(40, found_a)))
    b = run_from(write_run(tmp_path / "b", [], positives(40, found_b)))
    got = compare.compare_pair(a, b, ("a", "b"), resamples=4000, seed=1)["person_f1"]["ci95"]
    # one gold person per article; a run names exactly the found ones (matched), nobody elsewhere
    rng, diffs = random.Random(5), []
    for _ in range(4000):
        draw = [rng.randrange(40) for _ in range(40)]
        f1 = [2 * sum(i in found for i in draw) / (sum(i in found for i in draw) + 40) for found in (found_a, found_b)]
        diffs.append(f1[1] - f1[0])
    diffs.sort()
    by_hand = [diffs[int(0.025 * 4000)], diffs[int(0.975 * 4000) - 1]]
    assert got == pytest.approx(by_hand, abs=0.012), (got, by_hand)
