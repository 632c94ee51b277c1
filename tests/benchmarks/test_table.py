"""benchmarks/table.py: counts re-scored from predictions, and a refusal when eval.json disagrees."""
import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

from jinmei.files import write_jsonl
from jinmei.template.prompt import answer_text

ROOT = Path(__file__).resolve().parents[2]

FIELDS = ["name", "act", "address", "signature"]
EMPTY = {"persons": []}
YAMADA = {"persons": [{"name": "山田太郎", "act": "救助", "address": "東京都", "signature": None}]}


def prediction(gold, raw):
    return {"id": None, "verdict": "?", "exact": None, "raw": raw, "parsed": None, "gold": gold, "truncated": False,
            "prompt_tokens": 0, "generated_tokens": 0}


def write_jsonl_xz(path, rows):
    """As the results folders keep predictions."""
    with lzma.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def lane(tmp_path, eval_json):
    """A run folder (params.yaml) with one lane: Dev-All 3 empty + 1 positive, Dev-Positive 2 positives."""
    run = tmp_path / "run"
    folder = run / "lanes" / "a"
    (folder / "predictions").mkdir(parents=True)
    (folder / "metrics").mkdir()
    shutil.copy(ROOT / "params.yaml", run / "params.yaml")
    dev_all = [prediction(EMPTY, answer_text(EMPTY, FIELDS)), prediction(EMPTY, answer_text(YAMADA, FIELDS)),
               prediction(EMPTY, "{not json"), prediction(YAMADA, answer_text(YAMADA, FIELDS))]
    dev_positive = [prediction(YAMADA, answer_text(YAMADA, FIELDS)), prediction(YAMADA, answer_text(EMPTY, FIELDS))]
    for split, records in (("all", dev_all), ("positive", dev_positive)):
        for i, record in enumerate(records):
            record["id"] = f"{split}-{i}"
    write_jsonl_xz(folder / "predictions" / "dev_all.jsonl.xz", dev_all)
    write_jsonl(folder / "predictions" / "dev_positive.jsonl", dev_positive)
    (folder / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    return folder


def table(*folders):
    rows = [f"{chr(ord('a') + i)}={folder}" for i, folder in enumerate(folders)]
    return subprocess.run([sys.executable, str(ROOT / "benchmarks/table.py"), *rows],
                          capture_output=True, text=True, cwd=ROOT)


PRINTED = {"dev_all": {"false_positive_rate": 0.6667, "json_parse_rate": 0.75},
           "dev_positive": {"recall": 0.5, "person_f1": 0.6667}}


def test_counts_come_from_the_predictions(tmp_path):
    out = table(lane(tmp_path, PRINTED))
    assert out.returncode == 0, out.stderr
    assert "| a | 2 / 3 | 3 / 4 | 1 / 2 | 0.667 |" in out.stdout     # an unparsable answer is a false positive


def test_a_metrics_file_that_disagrees_fails(tmp_path):
    out = table(lane(tmp_path, {**PRINTED, "dev_positive": {"recall": 1.0, "person_f1": 0.6667}}))
    assert out.returncode == 1
    assert "dev_positive.recall: eval.json 1.0, re-scored 0.5000" in out.stderr


def test_second_table_counts_answers_identical_to_the_first_row(tmp_path):
    first = lane(tmp_path / "1", PRINTED)
    second = lane(tmp_path / "2", PRINTED)
    with lzma.open(second / "predictions" / "dev_all.jsonl.xz", "rt", encoding="utf-8") as f:
        dev_all = [json.loads(line) for line in f]
    dev_all[0]["raw"] = " " + dev_all[0]["raw"]      # the same answer, but not character for character
    write_jsonl_xz(second / "predictions" / "dev_all.jsonl.xz", dev_all)
    out = table(first, second)
    assert out.returncode == 0, out.stderr
    assert "answers identical to a" in out.stdout
    assert "| a | 1.000 [0.206, 1.000] | 4 / 4 | 2 / 2 |" in out.stdout
    assert "| b | 1.000 [0.206, 1.000] | 3 / 4 | 2 / 2 |" in out.stdout  # precision 1 of 1 named
