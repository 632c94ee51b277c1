"""The answer: the exact JSON string the model is trained to write, and how an answer is judged.

The prompt around it is the base model's chat template (jinmei.template.chat)."""
from __future__ import annotations

import json
from typing import Any


def answer_text(output: dict[str, Any], fields: list[str]) -> str:
    """Compact JSON with a fixed key order: the exact string the model is trained to produce."""
    persons = [{f: p.get(f) for f in fields} for p in output.get("persons", [])]
    return json.dumps({"persons": persons}, ensure_ascii=False, separators=(",", ":"))


def parse_answer(text: str, fields: list[str]) -> tuple[dict[str, Any] | None, str]:
    """Parse a model answer. Returns (value, verdict); verdict is ok | not_json | bad_schema.

    A bad answer is an outcome to count, never an exception.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None, "not_json"
    if not isinstance(value, dict) or set(value) != {"persons"} or not isinstance(value["persons"], list):
        return value, "bad_schema"
    for person in value["persons"]:
        if not isinstance(person, dict) or set(person) != set(fields):
            return value, "bad_schema"
        if not all(v is None or isinstance(v, str) for v in person.values()):
            return value, "bad_schema"
        if not person.get(fields[0]):
            return value, "bad_schema"
    return value, "ok"
