"""The raw-corpus contract: every bad input gets one message with file, line, problem and fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jinmei.errors import JinmeiError
from jinmei.data.corpus import MAX_LINE_BYTES, load_corpus

BAD = Path(__file__).parent / "bad_corpora"
FIELDS = ["name", "act", "address", "signature"]
GOOD = json.dumps({"id": "a1", "text": "横浜市の会社員、山田太郎さん（45）が表彰された。",
                   "output": {"persons": [{"name": "山田太郎", "act": "表彰", "address": "横浜市", "signature": None}]}},
                  ensure_ascii=False)

# file, line named in the message (None: no line), words the message must hold
REJECTED = [
    ("truncated_last_line.jsonl", 3, "last line is cut off"),
    ("bom_mid_file.jsonl", 2, "byte-order mark"),
    ("invalid_utf8.jsonl", 2, "invalid UTF-8"),
    ("nan.jsonl", 2, "NaN is not valid JSON"),
    ("infinity.jsonl", 3, "Infinity is not valid JSON"),
    ("nested_wrong_types.jsonl", 2, "output.persons[0].name is {'family'"),
    ("field_number.jsonl", 2, "output.persons[0].address is a number"),
    ("empty.jsonl", None, "the file is empty"),
    ("only_blank_lines.jsonl", None, "no articles"),
    ("duplicate_ids.jsonl", 3, "id 'a1' is already used on line 1"),
    ("unknown_field.jsonl", 2, "unknown field 'age'"),
    ("missing_field.jsonl", 2, "lacks field 'signature'"),
    ("missing_text.jsonl", 2, "key 'text' is missing"),
    ("empty_text.jsonl", 2, "text is empty"),
    ("persons_not_list.jsonl", 2, "output.persons is an object; it must be a list"),
    ("empty_name.jsonl", 2, "key field 'name' must be a non-empty string"),
    ("empty_string_field.jsonl", 2, "output.persons[0].act is an empty string; use null"),
    ("id_number.jsonl", 2, "id is 17"),
    ("top_level_array.jsonl", 2, "the line is a list"),
    ("pretty_printed.jsonl", 1, "pretty-printed"),
    ("duplicate_key.jsonl", 2, "key 'id' appears twice"),
    ("lone_surrogate.jsonl", 2, "lone surrogate"),
    ("duplicate_person.jsonl", 2, "'佐藤花子' appears twice"),
    ("output_extra_key.jsonl", 2, "output has unknown key 'source'"),
    ("unknown_top_key.jsonl", 2, "unknown key 'url'"),
    ("person_not_object.jsonl", 2, "output.persons[0] is a string"),
    ("deep_nesting.jsonl", 2, "nested too deeply"),
    ("huge_integer.jsonl", 2, "thousands of digits"),
]


@pytest.mark.parametrize("name,line,words", REJECTED, ids=[r[0] for r in REJECTED])
def test_bad_corpus_gets_one_clear_message(name, line, words):
    path = BAD / name
    with pytest.raises(JinmeiError) as info:
        load_corpus(path, FIELDS)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert words in message
    if line is not None:
        assert f": line {line}: " in message
    assert "\n" not in message
    assert ";" in message, "the message must say what to change"


def test_bom_at_start_is_accepted_and_counted():
    records, report = load_corpus(BAD / "bom.jsonl", FIELDS)
    assert report["bom"] is True
    assert [r["id"] for r in records] == ["a1", "a2"]
    assert not records[0]["id"].startswith("\ufeff")


def test_crlf_is_accepted_and_stripped():
    records, report = load_corpus(BAD / "crlf.jsonl", FIELDS)
    assert report["crlf_lines"] == 3 and len(records) == 3
    assert all("\r" not in r["text"] for r in records)


def test_blank_lines_and_missing_final_newline_are_accepted():
    records, report = load_corpus(BAD / "blank_lines.jsonl", FIELDS)
    assert (len(records), report["blank_lines"]) == (2, 3)
    records, report = load_corpus(BAD / "no_final_newline.jsonl", FIELDS)
    assert len(records) == 2 and report["no_final_newline"]


def test_exact_duplicate_texts_are_dropped_and_counted():
    records, report = load_corpus(BAD / "duplicate_texts.jsonl", FIELDS)
    assert [r["id"] for r in records] == ["a1", "a2"]
    assert report["duplicate_texts_dropped"] == 1 and report["duplicate_texts_conflicting"] == 0


def test_conflicting_duplicate_is_counted(tmp_path):
    row = json.loads(GOOD)
    other = dict(row, id="a2", output={"persons": []})
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps(other, ensure_ascii=False) + "\n")
    records, report = load_corpus(path, FIELDS)
    assert len(records) == 1 and report["duplicate_texts_conflicting"] == 1


def test_one_class_corpora_pass_the_contract():
    """Positives only or empties only are valid corpora; the split stage refuses them (tests/data/test_splitting.py)."""
    assert load_corpus(BAD / "positives_only.jsonl", FIELDS)[1]["empties"] == 0
    assert load_corpus(BAD / "empties_only.jsonl", FIELDS)[1]["positives"] == 0


def test_huge_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    filler = "あ" * (MAX_LINE_BYTES // 3 + 10)
    path.write_text(GOOD + "\n" + json.dumps({"id": "a2", "text": filler, "output": {"persons": []}},
                                             ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(JinmeiError, match=r": line 2: line is longer than 16777216 bytes \(16 MiB\), far more than any "
                                          r"news article; if it holds several articles .*; if it is one article, "
                                          r"shorten it"):
        load_corpus(path, FIELDS)


def test_a_350000_character_article_is_accepted_and_listed(tmp_path):
    """1 MB of Japanese on one line is one (very long) article, not "a whole file on one line"."""
    path = tmp_path / "long.jsonl"
    path.write_text(GOOD + "\n" + json.dumps({"id": "a2", "text": "あ" * 350_000, "output": {"persons": []}},
                                             ensure_ascii=False) + "\n", encoding="utf-8")
    assert path.stat().st_size > 1 << 20
    records, report = load_corpus(path, FIELDS)
    assert [r["id"] for r in records] == ["a1", "a2"] and report["very_long_ids"] == ["a2"]


@pytest.mark.parametrize("where,value,words", [
    ("text", "\u200b\u200b\u200d", "text is '\\u200b\\u200b\\u200d', no visible character"),
    ("text", "\u3000\u200b\ufeff\u2060", "no visible character (only zero-width or control characters), not an article"),
    ("name", "\u200b", "output.persons[0].name is '\\u200b', no visible character"),
    ("act", "\u200c", "output.persons[0].act is '\\u200c', no visible character"),
    ("id", "\u200b", "id is '\\u200b', no visible character"),
])
def test_zero_width_only_values_are_refused(tmp_path, where, value, words):
    """A text of only U+200B and the like has no visible character: not an article (nor a name, nor an id)."""
    row = json.loads(GOOD)
    if where in ("text", "id"):
        row[where] = value
    else:
        row["output"]["persons"][0][where] = value
    path = tmp_path / "zw.jsonl"
    path.write_text(GOOD.replace('"a1"', '"a0"') + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(JinmeiError) as info:
        load_corpus(path, FIELDS)
    assert ": line 2: " in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


def test_control_characters_are_accepted_and_listed(tmp_path):
    """Escaped NUL, ESC, BEL, U+2028 (and CR, DEL, a bidi override) in a text: accepted, listed for the report;
    a tab or a newline is ordinary text."""
    path = tmp_path / "cc.jsonl"
    texts = {"n": "\x00", "e": "\x1b[2J", "b": "\x07", "l": "\u2028", "r": "\r", "d": "\x7f", "o": "\u202e",
             "t": "\t", "nl": "\n"}
    lines = [json.dumps({"id": k, "text": f"山田太郎さん{v}{k}", "output": {"persons": []}}) for k, v in texts.items()]
    assert "\\u0000" in lines[0] and "\\u001b" in lines[1], "escaped in the JSON line"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, report = load_corpus(path, FIELDS)
    assert len(records) == len(texts)
    assert report["control_char_ids"] == ["n", "e", "b", "l", "r", "d", "o"]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(JinmeiError, match="corpus not found; set corpus.path"):
        load_corpus(tmp_path / "nope.jsonl", FIELDS)
    with pytest.raises(JinmeiError, match="not a regular file"):
        load_corpus(tmp_path, FIELDS)


def test_custom_fields_come_from_params(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "x", "text": "山田太郎さん", "output": {"persons": [{"name": "山田太郎", "role": None}]}},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    records, _ = load_corpus(path, ["name", "role"])
    assert records[0]["output"]["persons"] == [{"name": "山田太郎", "role": None}]
    with pytest.raises(JinmeiError, match=r"line 1: .*unknown field 'role'"):
        load_corpus(path, FIELDS)


@pytest.mark.parametrize("fields", ["name", [], ["name", "name"], ["name", 3], None])
def test_bad_schema_fields_are_refused(fields):
    with pytest.raises(JinmeiError, match="schema.fields is"):
        load_corpus(BAD / "bom.jsonl", fields)


def test_persons_come_back_in_field_order(tmp_path):
    path = tmp_path / "c.jsonl"
    person = {"signature": None, "address": None, "act": "逮捕", "name": "山田太郎"}
    path.write_text(json.dumps({"id": "x", "text": "山田太郎容疑者", "output": {"persons": [person]}},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    records, report = load_corpus(path, FIELDS)
    assert list(records[0]["output"]["persons"][0]) == FIELDS
    assert report["names_not_in_text"] == 0


def _load_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        records, _ = load_corpus(path, FIELDS)
    except JinmeiError as e:
        assert str(e).startswith(str(path))
        str(e).encode("utf-8")  # printable: no lone surrogate reaches stderr
        return
    for record in records:  # what passes can be written back as UTF-8 JSON
        json.dumps(record, ensure_ascii=False).encode("utf-8")


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=400))
def test_no_traceback_for_any_bytes(tmp_path, data):
    _load_bytes(tmp_path, data)


@FUZZ
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=len(GOOD.encode())), st.integers(0, 30))
def test_no_traceback_for_a_damaged_good_line(tmp_path, noise, at, cut):
    good = GOOD.encode()
    _load_bytes(tmp_path, good + b"\n" + good[:at] + noise + good[at + cut:] + b"\n")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["id", "text", "output", "persons", *FIELDS, "x"]), inner, max_size=5),
    max_leaves=20,
)


@FUZZ
@given(JSON_VALUES)
def test_no_traceback_for_any_json_value(tmp_path, value):
    _load_bytes(tmp_path, (json.dumps(value) + "\n").encode())


@FUZZ
@given(st.fixed_dictionaries({"id": JSON_VALUES, "text": JSON_VALUES,
                              "output": st.fixed_dictionaries({"persons": st.lists(
                                  st.dictionaries(st.sampled_from(FIELDS + ["age"]), JSON_VALUES, max_size=5), max_size=3)})}))
def test_no_traceback_for_near_valid_articles(tmp_path, value):
    _load_bytes(tmp_path, (json.dumps(value, ensure_ascii=False) + "\n").encode())
