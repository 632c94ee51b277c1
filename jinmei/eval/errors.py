"""metrics/errors.md: the eval's failures as a person reads them, counts first, then a few examples of each kind.

A rate says how often the model fails, not how: whether it names 男 as a person, drops the address, or writes
broken JSON is only seen in the articles. The report shows a bounded number of them so it stays small enough to
read in a terminal and to keep in git, in the prediction files' order so two runs of the same model give the same
page. Every article and answer is untrusted text: escaped so that no article can break the table, inject HTML or
send control sequences to the terminal that `cat`s the file. docs/metrics.md ("Errors") describes the page.
"""
from __future__ import annotations

import difflib
import json
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from jinmei.eval.scoring import answer_class, gold_class, match_persons, normalize
from jinmei.files import atomic_path

KINDS = ("false_positive", "missed", "wrong_fields", "invalid")
PER_KIND = 5            # examples shown per kind and dev set
ARTICLE_CHARS = 300     # article characters shown around the first highlighted name
ANSWER_CHARS = 300      # raw-answer characters shown for an invalid answer
VALUE_CHARS = 80        # characters shown of one field value
ID_CHARS = 60
PERSON_ROWS = 8         # gold/answer rows shown per example
CUT = "…"
HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
MARKDOWN = set("\\`*_[]|~#")                 # inline specials anywhere on a line (# also ends a heading)
BLOCK_START = set("+-=>")                    # specials only where a line begins (list, rule, quote)
INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def escape(text: str) -> str:
    """Literal markdown on one line: HTML specials as entities, markdown specials backslashed, line breaks as ⏎ and
    every other control, format or unassigned character as ⟨U+XXXX⟩ (an ESC must not reach a terminal, a U+202E
    must not reverse the rest of the page)."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append(" ⏎ ")
        elif ch in "\t\r":
            out.append(" ")
        elif ch in HTML:
            out.append(HTML[ch])
        elif ch in MARKDOWN:
            out.append("\\" + ch)
        elif unicodedata.category(ch) in INVISIBLE:
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


def line_safe(text: str) -> str:
    """Escaped text that also cannot begin a block where it starts a line (`- x`, `1. x`, four spaces of code)."""
    text = text.lstrip(" ")
    if text[:1] in BLOCK_START:
        return "\\" + text
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits and text[digits:digits + 1] in (".", ")"):
        return text[:digits] + "\\" + text[digits:]
    return text


def cut(text: str, limit: int) -> tuple[str, bool]:
    """(the first `limit` characters, with … when cut, escaped; whether it was cut)."""
    if len(text) <= limit:
        return escape(text), False
    return escape(text[:limit]) + CUT, True


def name_spans(text: str, names: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of every occurrence of each name in text, compared as scoring compares names (NFKC, no
    whitespace: 山田 太郎 is found in 山田太郎), merged and sorted."""
    norm, where = [], []
    for i, ch in enumerate(text):
        for c in normalize(ch):
            norm.append(c)
            where.append(i)
    haystack = "".join(norm)
    spans = []
    for name in names:
        key = normalize(name)
        start = haystack.find(key) if key else -1
        while start >= 0:
            spans.append((where[start], where[start + len(key) - 1] + 1))
            start = haystack.find(key, start + len(key))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def article_block(text: str | None, names: Sequence[str], limit: int = ARTICLE_CHARS) -> list[str]:
    """The article as one quoted line with the names in bold, cut to `limit` characters around the first name, and a
    note that says where it was cut (or that a name does not occur in it)."""
    if text is None:
        return ["> *(the prediction row holds no article text)*"]
    spans = name_spans(text, names)
    start, end = 0, len(text)
    if len(text) > limit:
        first = spans[0][0] if spans else 0
        start = max(0, min(first - limit // 3, len(text) - limit))
        end = start + limit
    parts, at = [], start
    for s, e in spans:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        parts += [escape(text[at:s]), "**" + escape(text[s:e]) + "**"]
        at = e
    parts.append(escape(text[at:end]))
    body = "".join(parts)
    lines = ["> " + (CUT + body if start else line_safe(body)) + (CUT if end < len(text) else "")]
    notes = []
    if (start, end) != (0, len(text)):
        notes.append(f"article cut to characters {start + 1}–{end} of {len(text)} ({CUT} marks each cut)")
    absent = [n for n in names if not name_spans(text, [n])]
    if absent:
        notes.append(", ".join(escape(n) for n in absent) + " does not occur in the article")
    if notes:
        lines += ["", "*" + "; ".join(notes) + "*"]
    return lines


def predicted_persons(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The persons an answer names: only an `ok` answer names anyone, as in scoring."""
    return row["parsed"]["persons"] if row["verdict"] == "ok" else []


def analyse(row: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """What went wrong in one prediction row, per kind (falsy when that kind did not happen)."""
    gold, predicted = row["gold"].get("persons", []), predicted_persons(row)
    pairs = match_persons(predicted, gold, fields[0])
    matched = {id(g) for _, g in pairs}
    wrong = []
    for p, g in pairs:
        differing = [f for f in fields[1:] if normalize(p.get(f)) != normalize(g.get(f))]
        if differing:
            wrong.append((g, differing))
    return {"pairs": pairs,
            "false_positive": gold_class(row["gold"]) == "empty"
            and answer_class(row["verdict"], row.get("parsed")) != "empty",
            "missed": [g for g in gold if id(g) not in matched],
            "wrong_fields": wrong,
            "invalid": row["verdict"] != "ok"}


NAME_ERRORS = ("cut_short", "extended", "overlapping", "not_a_name", "not_in_article", "missed")
NAME_ERROR_TITLES = {
    "cut_short": "cut short: the answer names part of a gold name (山田 for 山田太郎)",
    "extended": "extended: the answer's name holds a gold name and more (山田太郎氏, 山田太郎容疑者)",
    "overlapping": "overlapping: the answer's name shares a stretch with a gold name, neither holds the other",
    "not_a_name": "not a name: an answer name that occurs in the article and overlaps no gold name",
    "not_in_article": "not in the article: an answer name the article does not hold",
    "missed": "missed: a gold name the answer has no name for, whole or in part",
}


def name_errors(row: dict[str, Any], found: dict[str, Any], key: str) -> dict[str, int]:
    """The names an answer got wrong, by how: after exact matching (scoring's), each unmatched answer name is set
    against the unmatched gold names of the same article. Why: "recall 40%" does not say whether the model misses
    names, cuts them at the wrong character (a boundary or scoring question) or takes other words for names (a
    reading question); each has another fix. found: analyse(row)."""
    paired = {id(p) for p, _ in found["pairs"]}
    extra = [normalize(p.get(key)) for p in predicted_persons(row) if id(p) not in paired]
    missed = [normalize(g.get(key)) for g in found["missed"]]
    counts = dict.fromkeys(NAME_ERRORS, 0)
    text = normalize(row.get("text") or "")
    for name in extra:
        for kind, test in (("cut_short", lambda g: name and name in g), ("extended", lambda g: g and g in name),
                           ("overlapping", lambda g: longest_common(name, g) >= 2)):
            hit = next((g for g in missed if test(g)), None)
            if hit is not None:
                missed.remove(hit)
                counts[kind] += 1
                break
        else:
            counts["not_a_name" if name and name in text else "not_in_article"] += 1
    counts["missed"] = len(missed)
    return counts


def longest_common(a: str, b: str) -> int:
    """The length of the longest stretch of characters a and b share."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def name_error_counts(rows: list[dict[str, Any]], fields: Sequence[str],
                      found: Sequence[dict[str, Any]] | None = None) -> dict[str, int]:
    """name_errors summed over a dev set's rows (found: their analyse results, when the caller has them)."""
    total = dict.fromkeys(NAME_ERRORS, 0)
    for row, f in zip(rows, found or [analyse(r, fields) for r in rows]):
        for kind, n in name_errors(row, f, fields[0]).items():
            total[kind] += n
    return total


def person_cell(person: dict[str, Any] | None, fields: Sequence[str], bold: Sequence[str] = ()) -> str:
    """One person on one line, key first, each value escaped and cut; None (no such person) is —."""
    if person is None:
        return "—"
    parts = []
    for i, f in enumerate(fields):
        value = person.get(f)
        text = "null" if value is None else cut(value if isinstance(value, str) else json.dumps(value), VALUE_CHARS)[0]
        text = text if i == 0 else f"{f}: {text}"
        parts.append(f"**{text}**" if f in bold else text)
    return " · ".join(parts)


def side_by_side(row: dict[str, Any], found: dict[str, Any], fields: Sequence[str]) -> list[str]:
    """Gold and answer in two columns: matched persons on one row, then the gold persons the answer lacks, then the
    answer's extra persons; differing fields in bold. An invalid answer is shown as its verdict and raw text."""
    differing = {id(g): fs for g, fs in found["wrong_fields"]}
    by_gold = {id(g): p for p, g in found["pairs"]}
    gold = row["gold"].get("persons", [])
    rows = [(person_cell(g, fields, differing.get(id(g), ())),
             person_cell(by_gold.get(id(g)), fields, differing.get(id(g), ())))
            for g in gold]
    extra = [p for p in predicted_persons(row) if all(p is not q for q, _ in found["pairs"])]
    rows += [("—", person_cell(p, fields)) for p in extra]
    if row["verdict"] != "ok":
        if row.get("too_long"):
            answer = "*truncated*: not decoded, the prompt does not fit eval.n\\_ctx"
        else:
            raw, was_cut = cut(row.get("raw", ""), ANSWER_CHARS)
            answer = f"*{escape(row['verdict'])}*: {raw or '(empty)'}" + (
                f" *(first {ANSWER_CHARS} of {len(row['raw'])} characters)*" if was_cut else "")
        rows = [(g, answer if i == 0 else "") for i, (g, _) in enumerate(rows)] or [("*nobody*", answer)]
    elif not rows:
        rows = [("*nobody*", "*nobody*")]
    elif not gold:
        rows = [(g if i else "*nobody*", a) for i, (g, a) in enumerate(rows)]
    elif not predicted_persons(row):
        rows = [(g, a if i else "*nobody*") for i, (g, a) in enumerate(rows)]
    shown = rows[:PERSON_ROWS]
    if len(rows) > PERSON_ROWS:
        shown.append((f"{CUT} {len(rows) - PERSON_ROWS} more row(s) not shown", ""))
    return ["| gold | answer |", "|---|---|", *(f"| {g} | {a} |" for g, a in shown)]


def highlighted(row: dict[str, Any], found: dict[str, Any], kind: str, fields: Sequence[str]) -> list[str]:
    """The names an example is about: the answer's for a false positive, the gold ones otherwise."""
    key = fields[0]
    if kind == "false_positive":
        persons = predicted_persons(row)
    elif kind == "missed":
        persons = found["missed"]
    elif kind == "wrong_fields":
        persons = [g for g, _ in found["wrong_fields"]]
    else:
        persons = row["gold"].get("persons", [])
    return list(dict.fromkeys(p[key] for p in persons if isinstance(p.get(key), str) and p[key]))


def show_id(article_id: Any) -> str:
    text = article_id if isinstance(article_id, str) else json.dumps(article_id, ensure_ascii=False)
    return cut(text, ID_CHARS)[0]


def counts_table(rows: list[dict[str, Any]], found: list[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    n_empty = sum(1 for r in rows if gold_class(r["gold"]) == "empty")
    n_gold = sum(len(r["gold"].get("persons", [])) for r in rows)
    n_matched = sum(len(f["pairs"]) for f in found)
    missed = [f for f in found if f["missed"]]
    wrong = [f for f in found if f["wrong_fields"]]
    verdicts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("not_json", "bad_schema", "truncated")}
    too_long = sum(1 for r in rows if r.get("too_long"))
    others = "/".join(fields[1:])
    return [
        "| kind | count |",
        "|---|---|",
        f"| false positives: gold names nobody, the answer names someone or is invalid | "
        f"{sum(1 for f in found if f['false_positive'])} of {n_empty} articles without persons |",
        f"| missed persons: a gold person the answer does not name | {sum(len(f['missed']) for f in missed)} of "
        f"{n_gold} gold persons, in {len(missed)} article(s) |",
        f"| wrong fields: a named person whose {others} differs | {sum(len(f['wrong_fields']) for f in wrong)} of "
        f"{n_matched} named persons, in {len(wrong)} article(s) |",
        f"| invalid answers: not\\_json / bad\\_schema / truncated | {sum(verdicts.values())} of {len(rows)} "
        f"({verdicts['not_json']} / {verdicts['bad_schema']} / {verdicts['truncated']}"
        + (f", {too_long} of them not decoded: too long for eval.n\\_ctx" if too_long else "") + ") |",
    ]


TITLES = {"false_positive": "False positives", "missed": "Missed persons", "wrong_fields": "Wrong fields",
          "invalid": "Invalid answers"}


def name_errors_table(rows: list[dict[str, Any]], found: list[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    counts = name_error_counts(rows, fields, found)
    if not any(counts.values()):
        return []
    return ["", "Wrong and missing names, by how (docs/metrics.md, \"Name errors\"):", "",
            "| name error | count |", "|---|---|", *(f"| {NAME_ERROR_TITLES[k]} | {n} |" for k, n in counts.items())]


def split_section(name: str, rows: list[dict[str, Any]], found: list[dict[str, Any]], fields: Sequence[str],
                  per_kind: int) -> list[str]:
    lines = [f"## {name} ({len(rows)} articles)", "", *counts_table(rows, found, fields),
             *name_errors_table(rows, found, fields)]
    for kind in KINDS:
        hits = [i for i, f in enumerate(found) if f[kind]]
        shown = hits[:per_kind]
        lines += ["", f"### {TITLES[kind]}: {len(hits)} article(s)"
                  + (f", the first {len(shown)} shown" if len(hits) > len(shown) else "")]
        for i in shown:
            row = rows[i]
            lines += ["", f"#### {name} row {i + 1}, id {show_id(row['id'])}", "",
                      *article_block(row.get("text"), highlighted(row, found[i], kind, fields)), "",
                      *side_by_side(row, found[i], fields)]
    return lines


def report(predictions: dict[str, list[dict[str, Any]]], fields: Sequence[str], per_kind: int = PER_KIND,
           found: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The page for prediction rows {split: rows}, rows as evaluation.prediction_row writes them (with "text");
    found: {split: each row's analyse()}, when the caller has them (eval also counts name errors from them)."""
    found = found or {name: [analyse(r, fields) for r in rows] for name, rows in predictions.items()}
    lines = ["# Eval errors", "",
             f"What the GGUF got wrong on each dev set: counts, then at most {per_kind} example(s) per kind, in the "
             "order of data/predictions/<split>.jsonl (row = line). Kinds overlap: an invalid answer is also a false "
             "positive (article without persons) or misses every gold person. Names the example is about are in "
             f"**bold**; long articles are cut around the first of them, and each cut is marked {CUT} and said. "
             "docs/metrics.md (\"Errors\") defines each kind."]
    for name, rows in predictions.items():
        lines += ["", *split_section(name, rows, found[name], fields, per_kind)]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(predictions: dict[str, list[dict[str, Any]]], fields: Sequence[str], out: Path,
                 per_kind: int = PER_KIND) -> None:
    """Write the page atomically: a killed eval leaves the previous page or none."""
    write_text(out, report(predictions, fields, per_kind))
