"""Span-annotated NER data becomes a corpus the pipeline accepts: persons from the person entities, nothing invented."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jinmei.config.params import read_yaml
from jinmei.data import ner
from jinmei.data.corpus import load_corpus
from jinmei.errors import JinmeiError

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "data" / "real" / "stockmark-ner-wikipedia"
FIELDS = ["name", "act", "address", "signature"]


def ent(name: str, start: int, type_: str = "人名", end: int | None = None) -> dict:
    return {"name": name, "span": [start, start + len(name) if end is None else end], "type": type_}


SLICE = [
    {"curid": "10", "text": "山田太郎は東京都出身の俳優で、佐藤花子と共演した。",
     "entities": [ent("山田太郎", 0), ent("東京都", 5, "地名"), ent("佐藤花子", 15)]},
    {"curid": "11", "text": "トヨタ自動車は愛知県豊田市に本社を置く。",
     "entities": [ent("トヨタ自動車", 0, "法人名"), ent("愛知県豊田市", 7, "地名")]},
    {"curid": "10", "text": "鈴木一郎は選手。",                          # the span is one character off
     "entities": [ent("鈴木一郎", 1)]},
    # listed out of order, each name twice
    {"curid": "12", "text": "高橋は田中次郎の弟子で、田中次郎の死後に高橋が継いだ。",
     "entities": [ent("田中次郎", 12), ent("高橋", 0), ent("田中次郎", 3), ent("高橋", 20)]},
    {"curid": "13", "text": "新しい駅が開業した。", "entities": []},
]


def person(name: str) -> dict:
    return {"name": name, "act": None, "address": None, "signature": None}


def test_the_slice_converts_as_labelled():
    rows, summary = ner.convert(SLICE, FIELDS, id_prefix="t-")
    assert [r["id"] for r in rows] == ["t-10-0", "t-11-1", "t-10-2", "t-12-3", "t-13-4"]
    assert [r["text"] for r in rows] == [r["text"] for r in SLICE]
    assert [r["output"]["persons"] for r in rows] == [
        [person("山田太郎"), person("佐藤花子")],
        [],                                         # only a company and a place: an empty article
        [person("鈴木一郎")],                        # recovered from the text
        [person("高橋"), person("田中次郎")],        # order of first occurrence, each name once
        [],
    ]
    assert (summary.sentences, summary.positives, summary.persons, summary.empties) == (5, 3, 5, 2)
    assert (summary.spans_recovered, summary.duplicates_merged) == (1, 2)


def test_written_file_passes_the_corpus_reader(tmp_path):
    rows, _ = ner.convert(SLICE, FIELDS)
    out = tmp_path / "corpus.jsonl"
    ner.write(rows, out)
    raw = out.read_bytes()
    assert "山田太郎".encode() in raw and b"\\u" not in raw          # UTF-8 as written, not escaped
    records, report = load_corpus(out, FIELDS)
    assert records == rows
    assert (report["positives"], report["empties"], report["names_not_in_text"]) == (3, 2, 0)


def test_other_fields_and_person_type():
    records = [{"text": "PERSON Alice met Bob.", "entities": [ent("Alice", 7, "PER"), ent("Bob", 17, "PER")]}]
    rows, _ = ner.convert(records, ["who", "role"], person_type="PER")
    assert rows[0]["id"] == "0"                                   # no curid: the position alone
    assert rows[0]["output"]["persons"] == [{"who": "Alice", "role": None}, {"who": "Bob", "role": None}]
    layout = ner.Layout(text="sentence", entities="ents", name="surface", span="offsets", type="label")
    other = [{"sentence": "佐藤花子が来た。",
              "ents": [{"surface": "佐藤花子", "offsets": [0, 4], "label": "人名"}]}]
    assert ner.convert(other, FIELDS, layout=layout)[0][0]["output"]["persons"] == [person("佐藤花子")]


def test_fields_come_from_params_unless_given(tmp_path):
    assert ner.schema_fields(None, ROOT / "params.yaml") == read_yaml(ROOT / "params.yaml")["schema"]["fields"]
    assert ner.schema_fields(None, tmp_path / "none.yaml") == FIELDS
    assert ner.schema_fields("name, role", tmp_path / "none.yaml") == ["name", "role"]
    with pytest.raises(JinmeiError, match="distinct names"):
        ner.schema_fields("name,name", tmp_path / "none.yaml")


def test_a_name_not_in_the_text_is_refused_naming_the_record():
    bad = [*SLICE[:2], {"curid": "99", "text": "山田は来なかった。", "entities": [ent("山田太郎", 0)]}]
    with pytest.raises(JinmeiError) as e:
        ner.convert(bad, FIELDS)
    message = str(e.value)
    assert "record [2] (curid '99')" in message and "'山田太郎' does not occur" in message
    assert "holds '山田は来'" in message and "\n" not in message


@pytest.mark.parametrize("records, words", [
    ([SLICE[0], {"curid": "5", "entities": []}], ["record [1] (curid '5')", "'text' is missing"]),
    ([{"text": "   ", "entities": []}], ["record [0]", "'text' is '   '"]),
    ([SLICE[0], "a sentence"], ["record [1] is not an object"]),
    ([{"text": "山田太郎", "entities": {"name": "山田太郎"}}], ["record [0]", "not a list of entities"]),
    ([{"text": "山田太郎", "entities": [{"type": "人名", "span": [0, 4]}]}], ["entities[0].name is None"]),
    ([{"text": "山田太郎", "entities": ["山田太郎"]}], ["entities[0] is not an object"]),
])
def test_bad_records_are_one_error(records, words):
    with pytest.raises(JinmeiError) as e:
        ner.convert(records, FIELDS)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("content, words", [
    (b"", "not valid JSON"),
    (b'[{"text": "x"', "not valid JSON"),
    (b'{"text": "x", "entities": []}', "the JSON is an object; it must be a list"),
    (b"17", r"a single value \(17\)"),
    (b"[]", "the list is empty"),
    (b'["\x93\xfa"]', "invalid UTF-8"),
])
def test_bad_files_are_one_error(tmp_path, content, words):
    path = tmp_path / "in.json"
    path.write_bytes(content)
    with pytest.raises(JinmeiError, match=words):
        ner.read_records(path)


def test_first_records_of_the_committed_data(tmp_path):
    records = json.loads((REAL / "ner.json").read_text(encoding="utf-8"))[:50]
    rows, summary = ner.convert(records, FIELDS, id_prefix="stockmark-")
    out = tmp_path / "corpus.jsonl"
    ner.write(rows, out)
    read, report = load_corpus(out, FIELDS)
    assert read == rows and report["accepted"] == 50 and report["names_not_in_text"] == 0
    for record, row in zip(records, read):
        marked = [e["name"] for e in record["entities"] if e["type"] == "人名"]
        assert [p["name"] for p in row["output"]["persons"]] == list(dict.fromkeys(marked))
        assert all(p["act"] is p["address"] is p["signature"] is None for p in row["output"]["persons"])
    assert 0 < summary.positives < 50 and summary.spans_recovered == 0


def test_the_committed_corpus_is_the_conversion_of_the_committed_data(tmp_path, capsys):
    out = tmp_path / "corpus.jsonl"
    ner.main([str(REAL / "ner.json"), str(out), "--id-prefix", "stockmark-", "--fields", ",".join(FIELDS)])
    assert out.read_bytes() == (REAL / "corpus.jsonl").read_bytes()
    assert "5343 sentences, 1739 with persons, 2895 persons, 3604 empties" in capsys.readouterr().out
    assert "CC-BY-SA 3.0" in (REAL / "LICENSE").read_text(encoding="utf-8")


def test_cli_error_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "in.json"
    bad.write_text(json.dumps([{"curid": "7", "entities": []}]), encoding="utf-8")
    out = tmp_path / "corpus.jsonl"
    done = subprocess.run([sys.executable, "-m", "jinmei.data.ner", str(bad), str(out), "--fields", "name"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {bad}: record [0] (curid '7'): 'text' is missing")
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]       # nothing written, no temporary left
