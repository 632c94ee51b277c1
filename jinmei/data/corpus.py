"""The raw-corpus contract: what a corpus file must look like, checked line by line.

One JSON object per line: {"id": str, "text": str, "output": {"persons": [{<field>: str|null}]}}.
Any problem stops the load with ONE message naming the file, the line, what is wrong and what to
change; no byte content may escape as a traceback. docs/corpus.md lists every case.
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from jinmei.errors import JinmeiError, show_id

# One article per line. 16 MiB (over 5 million Japanese characters) is far beyond any article, even a 1 MB one
# (counted as very long, below): the limit only stops a broken export (a whole file on one line) being read whole.
MAX_LINE_BYTES = 16 << 20
BOM = "\ufeff"
TOP_KEYS = ("id", "text", "output")
# A text longer than this is counted in the split report (`texts_very_long`): no news article is this long; it is
# likely a whole page, a concatenation or a broken export. Accepted: split measures dev articles against eval's
# budget (split.too_long) and training cuts or skips what exceeds base.max_seq_length (train.too_long).
LONG_TEXT_CHARS = 10_000
# Characters with no glyph: a text, id or field made only of these (and whitespace) names nothing.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cn", "Cs"}
BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}  # Hangul fillers, the blank Braille pattern
# Control characters counted in the split report (`texts_with_control_chars`): C0/C1 controls (category Cc) other
# than tab and newline (NUL, ESC, BEL, CR, DEL ...), the Unicode line and paragraph separators and the bidirectional
# embeddings, overrides and isolates.
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class _LineError(Exception):
    """A problem on one line; load_corpus adds the file and the line number."""


class _Incomplete(_LineError):
    """The line is not JSON at all (on the last line: probably cut off)."""


def _show(value: Any, limit: int = 40) -> str:
    return show_id(value, limit)


def visible(text: str) -> bool:
    """Whether a string has at least one character with a glyph (not only whitespace, zero-width or controls)."""
    return any(unicodedata.category(ch) not in INVISIBLE_CATEGORIES and ch not in BLANK_LETTERS for ch in text)


def has_control_chars(text: str) -> bool:
    """Control characters other than tab and newline, U+2028/U+2029, or a bidirectional control."""
    return CONTROL_CHARS.search(text) is not None


def _type_name(value: Any) -> str:
    """'an object', 'a list', ...: the JSON name of a parsed value's type, with its article."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _reject_constant(name: str) -> Any:
    raise _LineError(f"{name} is not valid JSON; write null (or a finite number) instead")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _LineError(f"key {_show(key)} appears twice in one object; keep one")
        obj[key] = value
    return obj


def has_lone_surrogate(text: str) -> bool:
    """Whether JSON text held a \\ud800-\\udfff escape that is half of a character (it cannot be written as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_string(value: str, where: str) -> None:
    if has_lone_surrogate(value):
        raise _LineError(
            f"{where} contains a lone surrogate escape (like \\ud800) that is not a character; "
            "fix the escape or remove it"
        )


def _parse_line(line: str) -> Any:
    try:
        return json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        hint = ""
        if line.strip() in ("{", "["):
            hint = " (the file looks pretty-printed: write each article on ONE line)"
        raise _Incomplete(f"{e.msg} at column {e.colno}{hint}") from None
    except RecursionError:
        raise _LineError("JSON nested too deeply; an article is a flat object") from None
    except ValueError:  # an integer literal with thousands of digits
        raise _LineError("a number with thousands of digits; an article holds only strings, lists and objects") from None


def _check_person(person: Any, index: int, fields: list[str]) -> dict[str, str | None]:
    where = f"output.persons[{index}]"
    if not isinstance(person, dict):
        raise _LineError(f"{where} is {_type_name(person)}; each person must be an object with keys {fields}")
    missing = [f for f in fields if f not in person]
    unknown = [k for k in person if k not in fields]
    if unknown:
        raise _LineError(
            f"{where} has unknown field {_show(unknown[0])}; allowed fields are {fields} "
            "(params.yaml schema.fields); rename or remove it"
        )
    if missing:
        raise _LineError(f"{where} lacks field {_show(missing[0])}; add it (null when unknown)")
    key = fields[0]
    value = person[key]
    if not isinstance(value, str) or not value.strip():
        raise _LineError(
            f"{where}.{key} is {_show(value)}; the key field '{key}' must be a non-empty string "
            "(drop persons without one)"
        )
    if not visible(value):
        raise _LineError(
            f"{where}.{key} is {_show(value)}, no visible character (only zero-width or control characters); "
            "write the name, or drop the person"
        )
    for field in fields:
        value = person[field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise _LineError(
                f"{where}.{field} is {_type_name(value)} ({_show(value)}); use a string, or null when unknown"
            )
        if not value.strip():
            raise _LineError(f"{where}.{field} is an empty string; use null when unknown")
        _check_string(value, f"{where}.{field}")
        if not visible(value):
            raise _LineError(f"{where}.{field} is {_show(value)}, no visible character (only zero-width or control "
                             "characters); use null when unknown")
    return {f: person[f] for f in fields}


def _check_record(obj: Any, fields: list[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _LineError(f"the line is {_type_name(obj)}; it must be an object with keys {list(TOP_KEYS)}")
    unknown = [k for k in obj if k not in TOP_KEYS]
    if unknown:
        raise _LineError(f"unknown key {_show(unknown[0])}; an article has only {list(TOP_KEYS)}; remove it")
    missing = [k for k in TOP_KEYS if k not in obj]
    if missing:
        raise _LineError(f"key '{missing[0]}' is missing; an article needs {list(TOP_KEYS)}")
    article_id, text, output = obj["id"], obj["text"], obj["output"]
    if not isinstance(article_id, str) or not article_id.strip():
        raise _LineError(f"id is {_show(article_id)}; it must be a non-empty string (quote numbers: \"17\")")
    _check_string(article_id, "id")
    if not visible(article_id):
        raise _LineError(f"id is {_show(article_id)}, no visible character (only zero-width or control characters); "
                         "give the article an id that can be read")
    if not isinstance(text, str):
        raise _LineError(f"text is {_type_name(text)}; it must be the article as a string")
    if not text.strip():
        raise _LineError("text is empty; remove the line or fill in the article")
    _check_string(text, "text")
    if not visible(text):
        raise _LineError(f"text is {_show(text)}, no visible character (only zero-width or control characters), "
                         "not an article; remove the line or fill in the article")
    if not isinstance(output, dict):
        raise _LineError(f"output is {_type_name(output)}; it must be an object {{\"persons\": [...]}}")
    if set(output) != {"persons"}:
        other = [k for k in output if k != "persons"]
        what = f"has unknown key {_show(other[0])}" if other else "lacks key 'persons'"
        raise _LineError(f"output {what}; output must be exactly {{\"persons\": [...]}}")
    persons = output["persons"]
    if not isinstance(persons, list):
        raise _LineError(
            f"output.persons is {_type_name(persons)}; it must be a list ([] when the article names no person)"
        )
    checked = [_check_person(p, i, fields) for i, p in enumerate(persons)]
    seen: set[str] = set()
    for i, person in enumerate(checked):
        key = person[fields[0]]
        if key in seen:
            raise _LineError(
                f"output.persons[{i}].{fields[0]} {_show(key)} appears twice; merge the two persons into one"
            )
        seen.add(key)
    return {"id": article_id, "text": text, "output": {"persons": checked}}


def _decode(raw: bytes, line_no: int) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _LineError(
            f"invalid UTF-8 at byte {e.start + 1} of the line (0x{raw[e.start]:02x}); "
            "re-save the file as UTF-8 (it may be Shift_JIS or cp932)"
        ) from None
    if line.startswith(BOM) and line_no > 1:
        raise _LineError("a byte-order mark (BOM) starts this line; files were probably concatenated; remove it")
    return line


def load_corpus(path: Path | str, fields: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read and validate a raw corpus. Returns (records, report); raises JinmeiError on the first problem.

    Accepted quietly (and counted in the report): a UTF-8 BOM at the start of the file, CRLF line
    ends, blank lines, a last line without a newline. Exact-duplicate texts are dropped (first kept).
    Accepted and listed by id: texts with control characters, texts over LONG_TEXT_CHARS, dropped duplicates
    whose labels differ. report["line_of"] maps every id to its line.
    """
    path = Path(path)
    if (not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields)
            or len(set(fields)) < len(fields)):
        raise JinmeiError(f"params.yaml schema.fields is {_show(fields)}; it must be a list of distinct names, "
                          "the key field first, e.g. [name, act, address, signature]")
    if not path.exists():
        raise JinmeiError(f"{path}: corpus not found; set corpus.path in params.yaml or pass --corpus")
    if not path.is_file():
        raise JinmeiError(f"{path}: not a regular file; the corpus must be one JSON Lines file")
    report = {
        "lines": 0, "blank_lines": 0, "crlf_lines": 0, "bom": False, "no_final_newline": False,
        "duplicate_texts_dropped": 0, "duplicate_texts_conflicting": 0,
        # ids, in file order: the split report counts them and names the first few
        "conflicting_ids": [], "control_char_ids": [], "very_long_ids": [],
        "line_of": {},  # id -> its line in the file, for every message that names an article
    }
    records: list[dict[str, Any]] = []
    id_line: dict[str, int] = {}
    text_index: dict[str, int] = {}
    try:
        f = open(path, "rb")
    except OSError as e:
        raise JinmeiError(f"{path}: cannot read ({e.strerror}); check the permissions") from None
    with f:
        line_no = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            line_no += 1
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise _LineError(
                        f"line is longer than {MAX_LINE_BYTES} bytes ({MAX_LINE_BYTES >> 20} MiB), far more than any "
                        "news article; if it holds several articles (a JSON array, or objects not separated by "
                        "newlines), write one JSON object per line; if it is one article, shorten it"
                    )
                last = not raw.endswith(b"\n")
                line = _decode(raw, line_no)
                if line_no == 1 and line.startswith(BOM):
                    report["bom"] = True
                    line = line[1:]
                if line.endswith("\r\n"):
                    report["crlf_lines"] += 1
                if last:
                    report["no_final_newline"] = True
                if not line.strip():
                    report["blank_lines"] += 1
                    continue
                try:
                    obj = _parse_line(line)
                except _Incomplete as e:
                    if last:
                        raise _LineError(
                            f"the last line is cut off: no newline at the end and not valid JSON ({e}); "
                            "the file was probably truncated while writing: re-export it or delete the last line"
                        ) from None
                    raise _LineError(f"not valid JSON: {e}; each line must be one complete JSON object") from None
                record = _check_record(obj, fields)
            except _LineError as e:
                raise JinmeiError(f"{path}: line {line_no}: {e}") from None
            first = id_line.get(record["id"])
            if first is not None:
                raise JinmeiError(
                    f"{path}: line {line_no}: id {_show(record['id'])} is already used on line {first}; "
                    "ids must be unique"
                )
            id_line[record["id"]] = line_no
            seen = text_index.get(record["text"])
            if seen is not None:
                report["duplicate_texts_dropped"] += 1
                if records[seen]["output"] != record["output"]:
                    report["duplicate_texts_conflicting"] += 1
                    report["conflicting_ids"].append(record["id"])
                continue
            if has_control_chars(record["text"]):
                report["control_char_ids"].append(record["id"])
            if len(record["text"]) > LONG_TEXT_CHARS:
                report["very_long_ids"].append(record["id"])
            text_index[record["text"]] = len(records)
            records.append(record)
    report["lines"] = line_no
    report["line_of"] = id_line
    if line_no == 0:
        raise JinmeiError(f"{path}: the file is empty; write one JSON object per line (docs/corpus.md)")
    if not records:
        raise JinmeiError(f"{path}: no articles, only {line_no} blank line(s); write one JSON object per line")
    positives = sum(1 for r in records if r["output"]["persons"])
    report.update(
        accepted=len(records),
        positives=positives,
        empties=len(records) - positives,
        persons=sum(len(r["output"]["persons"]) for r in records),
        names_not_in_text=sum(
            1 for r in records for p in r["output"]["persons"] if p[fields[0]] not in r["text"]
        ),
    )
    return records, report
