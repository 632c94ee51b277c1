"""Span-annotated NER data as a raw corpus: real sentences with hand-marked person names, for the pipeline.

`python -m jinmei.data.ner IN OUT [--person-type 人名] [--id-prefix P] [--fields name,act,...]`

IN is one JSON document, a list of records in the layout of Stockmark's ner-wikipedia-dataset
(data/real/stockmark-ner-wikipedia/README.md):
`{"curid": "473536", "text": "...", "entities": [{"name": "...", "span": [start, end], "type": "人名"}, ...]}`.
OUT is a corpus in the contract of docs/corpus.md. Such data marks names and nothing else, so each person gets its
name and null in every other schema field; a sentence without a person entity becomes an empty article, the
false-positive class the pipeline needs. Persons are deduplicated by name (eval matches on it) and ordered by first
occurrence in the text, as the labelling convention orders them.

A span is trusted only when text[start:end] is the entity's name; otherwise the name is searched in the text (a
span counted against another version of the text, or off by one). A name that does not occur at all is refused: a
label the model cannot read off the text only teaches it to invent names.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinmei.data.corpus import visible
from jinmei.errors import JinmeiError, run_main, show_id
from jinmei.files import atomic_path

DEFAULT_FIELDS = ("name", "act", "address", "signature")  # params.yaml's schema.fields as committed
PERSON_TYPE = "人名"


@dataclass(frozen=True)
class Layout:
    """The key names of the input records; the defaults are the stockmark dataset's."""
    text: str = "text"
    entities: str = "entities"
    curid: str = "curid"
    name: str = "name"
    span: str = "span"
    type: str = "type"


@dataclass
class Summary:
    sentences: int = 0
    positives: int = 0
    persons: int = 0
    spans_recovered: int = 0      # a span that did not hold the name; the name was found elsewhere in the text
    duplicates_merged: int = 0    # the same name marked twice in one sentence

    @property
    def empties(self) -> int:
        return self.sentences - self.positives

    def line(self, out: Path) -> str:
        return (f"{out}: {self.sentences} sentences, {self.positives} with persons, {self.persons} persons, "
                f"{self.empties} empties ({self.spans_recovered} spans recovered by name, "
                f"{self.duplicates_merged} repeated names merged)")


def read_records(path: Path) -> list[Any]:
    """The input's list of records, or one JinmeiError saying what the file is instead."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JinmeiError(f"{path}: not found; pass the NER JSON file (a list of annotated sentences)") from None
    except OSError as e:
        raise JinmeiError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JinmeiError(f"{path}: invalid UTF-8 at byte {e.start}; re-save the file as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise JinmeiError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}; the input is one "
                          "JSON list of records (for JSON Lines, wrap the lines in [ ] with commas)") from None
    except (RecursionError, ValueError):
        raise JinmeiError(f"{path}: not a list of annotated sentences (nested too deeply or a huge number)") from None
    if not isinstance(data, list):
        what = "an object" if isinstance(data, dict) else f"a single value ({show_id(data)})"
        raise JinmeiError(f"{path}: the JSON is {what}; it must be a list of records, each with a text and its "
                          "entities")
    if not data:
        raise JinmeiError(f"{path}: the list is empty; no sentence to convert")
    return data


def _where(index: int, record: Any, layout: Layout) -> str:
    curid = record.get(layout.curid) if isinstance(record, dict) else None
    return f"record [{index}]" + (f" ({layout.curid} {show_id(curid)})" if curid is not None else "")


def _usable(value: Any) -> bool:
    """A non-empty string the corpus contract accepts: a visible character and valid UTF-8 (no lone surrogate)."""
    if not isinstance(value, str) or not visible(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _locate(text: str, name: str, span: Any) -> tuple[int, bool] | None:
    """(start of the name in text, whether the span held it), or None when the name is not in the text."""
    if (isinstance(span, (list, tuple)) and len(span) == 2 and all(type(x) is int for x in span)
            and 0 <= span[0] < span[1] <= len(text) and text[span[0]:span[1]] == name):
        return span[0], True
    start = text.find(name)
    return (start, False) if start >= 0 else None


def person_names(record: Any, where: str, layout: Layout, person_type: str, summary: Summary) -> list[str]:
    """The record's person names, deduplicated, in order of first occurrence in the text."""
    if not isinstance(record, dict):
        raise JinmeiError(f"{where} is not an object; each record needs '{layout.text}' and '{layout.entities}'")
    text = record.get(layout.text)
    if not _usable(text):
        what = "missing" if layout.text not in record else f"{show_id(text)}, not a text"
        raise JinmeiError(f"{where}: '{layout.text}' is {what}; every record needs the sentence as a string")
    entities = record.get(layout.entities, [])
    if not isinstance(entities, list):
        raise JinmeiError(f"{where}: '{layout.entities}' is not a list of entities")
    found: list[tuple[int, int, str]] = []   # (start in the text, entity order, name)
    for k, entity in enumerate(entities):
        if not isinstance(entity, dict):
            raise JinmeiError(f"{where}: {layout.entities}[{k}] is not an object with '{layout.type}' and "
                              f"'{layout.name}'")
        if entity.get(layout.type) != person_type:
            continue
        name = entity.get(layout.name)
        if not _usable(name):
            raise JinmeiError(f"{where}: {layout.entities}[{k}].{layout.name} is {show_id(name)}; a person entity "
                              "needs its name as a non-empty string")
        span = entity.get(layout.span)
        located = _locate(text, name, span)
        if located is None:
            held = (text[span[0]:span[1]] if isinstance(span, list) and len(span) == 2
                    and all(type(x) is int for x in span) else None)
            raise JinmeiError(f"{where}: {layout.entities}[{k}].{layout.name} {show_id(name)} does not occur in the "
                              f"text (its {layout.span} {show_id(span)} holds {show_id(held)}); correct the name or "
                              "drop the entity")
        start, exact = located
        summary.spans_recovered += not exact
        found.append((start, k, name))
    names: list[str] = []
    for _, _, name in sorted(found):
        if name in names:
            summary.duplicates_merged += 1
        else:
            names.append(name)
    return names


def convert(records: list[Any], fields: list[str], person_type: str = PERSON_TYPE, id_prefix: str = "",
            layout: Layout = Layout()) -> tuple[list[dict[str, Any]], Summary]:
    """Corpus rows (docs/corpus.md) for the records, and what they hold. Ids are PREFIX + curid + '-' + the
    record's index: curids repeat (one page gives several sentences), the index makes the id unique."""
    summary = Summary()
    rows = []
    for index, record in enumerate(records):
        where = _where(index, record, layout)
        names = person_names(record, where, layout, person_type, summary)
        curid = record.get(layout.curid)
        plain = isinstance(curid, (str, int)) and not isinstance(curid, bool) and _usable(str(curid))
        stem = f"{curid}-" if plain else ""
        persons = [{field: (name if i == 0 else None) for i, field in enumerate(fields)} for name in names]
        rows.append({"id": f"{id_prefix}{stem}{index}", "text": record[layout.text], "output": {"persons": persons}})
        summary.sentences += 1
        summary.positives += bool(persons)
        summary.persons += len(persons)
    return rows, summary


def schema_fields(option: str | None, params_file: Path) -> list[str]:
    """--fields, else params.yaml's schema.fields (the corpus must hold exactly those), else the committed four."""
    if option is not None:
        fields = [f.strip() for f in option.split(",")]
        if not all(fields) or len(set(fields)) < len(fields):
            raise JinmeiError(f"--fields {option!r}: give distinct names separated by commas, the name field first")
        return fields
    if params_file.exists():
        from jinmei.config.params import load_all

        return list(load_all(params_file).schema.fields)
    return list(DEFAULT_FIELDS)


def write(rows: list[dict[str, Any]], out: Path) -> None:
    """One JSON object per line, UTF-8 as written (ensure_ascii=False), replaced in one rename."""
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert span-annotated NER JSON (a list of records with a text and "
                                             "typed entity spans) into a jinmei corpus (docs/corpus.md).")
    ap.add_argument("input", type=Path, help="the NER JSON file, e.g. data/real/stockmark-ner-wikipedia/ner.json")
    ap.add_argument("out", type=Path, help="the corpus to write (JSON Lines)")
    ap.add_argument("--person-type", default=PERSON_TYPE, help="the entity type that marks a person (default 人名)")
    ap.add_argument("--id-prefix", default="", help="put before every id, e.g. 'wiki-'")
    ap.add_argument("--fields", help="the person fields, comma-separated, name first (default: schema.fields of "
                                     "--params, or name,act,address,signature)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="where to read schema.fields")
    defaults = Layout()
    for key in ("text", "entities", "curid", "name", "span", "type"):
        ap.add_argument(f"--{key}-key", default=getattr(defaults, key), help=f"the records' key for the {key} "
                        f"(default {getattr(defaults, key)!r})")
    args = ap.parse_args(argv)
    layout = Layout(**{key: getattr(args, f"{key}_key") for key in ("text", "entities", "curid", "name", "span",
                                                                    "type")})
    fields = schema_fields(args.fields, args.params)
    records = read_records(args.input)
    try:
        rows, summary = convert(records, fields, args.person_type, args.id_prefix, layout)
    except JinmeiError as e:
        raise JinmeiError(f"{args.input}: {e}") from None
    write(rows, args.out)
    print(summary.line(args.out))


if __name__ == "__main__":
    run_main(main)
