"""Eval metrics as pure functions of (gold output, model answer); docs/metrics.md says what each means.

An answer is one of four verdicts: ok (valid JSON in the schema), not_json, bad_schema, truncated
(hit max_new_tokens before end-of-turn). Only `ok` answers count as answers: every other verdict is a
failure in both directions (a miss on a positive article, a false positive on an empty one).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Sequence

from jinmei.data.names import normalize
from jinmei.template.prompt import parse_answer

VERDICTS = ("ok", "not_json", "bad_schema", "truncated")
CLASSES = ("empty", "non_empty", "invalid")


def judge(text: str, truncated: bool, fields: Sequence[str]) -> tuple[Any, str]:
    """(parsed value, verdict). A truncated answer is a failure even if its prefix happens to parse."""
    try:
        value, verdict = parse_answer(text, list(fields))
    except RecursionError:              # "[[[[..." nested deeper than Python's JSON parser goes
        value, verdict = None, "not_json"
    if truncated:
        return value, "truncated"
    return value, verdict


def answer_class(verdict: str, value: Any) -> str:
    if verdict != "ok":
        return "invalid"
    return "non_empty" if value["persons"] else "empty"


def gold_class(gold: dict[str, Any]) -> str:
    return "non_empty" if gold.get("persons") else "empty"


def _ratio(num: float, den: float) -> float | None:
    """None (not 0) when nothing was there to count: an undefined rate must not look like a result."""
    return num / den if den else None


def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95% Wilson score interval of k successes in n: honest at 0, 1 and small n (20 articles: 0/20 -> [0, 0.16])."""
    if not n:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def difference_interval(k1: int, n1: int, k2: int, n2: int) -> list[float] | None:
    """95% interval of k1/n1 − k2/n2 from the two Wilson intervals (Newcombe's hybrid score, his method 10): honest
    where a rate sits at 1, as name recall does on an easy corpus, where the normal approximation collapses."""
    if not (n1 and n2):
        return None
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    return [round(p1 - p2 - math.hypot(p1 - l1, u2 - p2), 4), round(p1 - p2 + math.hypot(u1 - p1, p2 - l2), 4)]


def _f1(matched: int, predicted: int, gold: int) -> float | None:
    """2·tp / (predicted + gold): the harmonic mean of precision and recall, and still defined (0) when the model
    names nobody, so a run that answers empty to everything scores 0 in `dvc exp show` rather than a blank."""
    return 2 * matched / (predicted + gold) if predicted + gold else None


def _canonical(persons: Iterable[dict[str, Any]], fields: Sequence[str]) -> Counter:
    return Counter(tuple(p.get(f) for f in fields) for p in persons)


def exact(value: Any, verdict: str, gold: dict[str, Any], fields: Sequence[str]) -> bool:
    """Same persons with the same field values (order of persons ignored, no normalization)."""
    return verdict == "ok" and _canonical(value["persons"], fields) == _canonical(gold.get("persons", []), fields)


def match_persons(predicted: list[dict[str, Any]], gold: list[dict[str, Any]], key: str
                  ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs (predicted, gold) with the same normalized key; duplicates pair up in order, once each."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in gold:
        by_key[normalize(g.get(key))].append(g)
    pairs = []
    for p in predicted:
        bucket = by_key.get(normalize(p.get(key)))
        if bucket:
            pairs.append((p, bucket.pop(0)))
    return pairs


def classification(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Article-level metrics. rows: {"gold": output, "value": parsed, "verdict": str}."""
    n = len(rows)
    verdicts = Counter(r["verdict"] for r in rows)
    gold_empty = [r for r in rows if gold_class(r["gold"]) == "empty"]
    gold_pos = [r for r in rows if gold_class(r["gold"]) == "non_empty"]
    false_pos = sum(1 for r in gold_empty if answer_class(r["verdict"], r["value"]) != "empty")
    found = sum(1 for r in gold_pos if answer_class(r["verdict"], r["value"]) == "non_empty")
    answered_empty = sum(1 for r in rows if answer_class(r["verdict"], r["value"]) == "empty")
    return {
        "n": n,
        "n_gold_empty": len(gold_empty),
        "n_gold_positive": len(gold_pos),
        "false_positive_rate": _ratio(false_pos, len(gold_empty)),
        "recall": _ratio(found, len(gold_pos)),
        "json_parse_rate": _ratio(verdicts["ok"] + verdicts["bad_schema"], n),
        "schema_valid_rate": _ratio(verdicts["ok"], n),
        "exact_match": _ratio(sum(1 for r in rows if r.get("exact")), n),
        "truncated": verdicts["truncated"],
        "truncated_rate": _ratio(verdicts["truncated"], n),
        "verdicts": {v: verdicts[v] for v in VERDICTS},
        "answered_empty_rate": _ratio(answered_empty, n),
        "ci95": {"false_positive_rate": wilson(false_pos, len(gold_empty)), "recall": wilson(found, len(gold_pos)),
                 "json_parse_rate": wilson(verdicts["ok"] + verdicts["bad_schema"], n),
                 "schema_valid_rate": wilson(verdicts["ok"], n)},
    }


def persons_of(value: Any) -> list[dict[str, Any]]:
    """Person objects of any parsed answer (even a bad_schema one), for the missing-field shares."""
    if isinstance(value, dict) and isinstance(value.get("persons"), list):
        return [p for p in value["persons"] if isinstance(p, dict)]
    return []


def extraction(rows: list[dict[str, Any]], fields: Sequence[str]) -> dict[str, Any]:
    """Person-level metrics, matched on the key field (fields[0])."""
    key, others = fields[0], list(fields[1:])
    tp = n_pred = n_gold = 0
    field_hits = Counter()
    field_gold = Counter()
    missing = Counter()
    n_answer_persons = 0
    for r in rows:
        gold = r["gold"].get("persons", [])
        predicted = r["value"]["persons"] if r["verdict"] == "ok" else []
        pairs = match_persons(predicted, gold, key)
        tp += len(pairs)
        n_pred += len(predicted)
        n_gold += len(gold)
        for p, g in pairs:
            for f in others:
                if normalize(g.get(f)):
                    field_gold[f] += 1
                    field_hits[f] += normalize(p.get(f)) == normalize(g.get(f))
        if r["verdict"] in ("ok", "bad_schema"):
            for p in persons_of(r["value"]):
                n_answer_persons += 1
                for f in fields:
                    missing[f] += not normalize(p.get(f))
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gold)
    return {
        "ci95_persons": {"person_precision": wilson(tp, n_pred), "person_recall": wilson(tp, n_gold)},
        "person_precision": precision,
        "person_recall": recall,
        "person_f1": _f1(tp, n_pred, n_gold),
        "persons_gold": n_gold,
        "persons_predicted": n_pred,
        "persons_matched": tp,
        "field_recall": {f: _ratio(field_hits[f], field_gold[f]) for f in others},
        "field_missing": {f: _ratio(missing[f], n_answer_persons) for f in fields},
    }


def names_not_in(article: str, value: Any, key: str) -> list[str]:
    """The answer's person keys (names) that do not occur in the article, compared as `normalize` compares them.

    Such a person was not read from the article: the model copied a name from elsewhere, e.g. from JSON-looking
    text an article holds (a fake answer appended to it), or made one up."""
    if not isinstance(value, dict) or not isinstance(value.get("persons"), list):
        return []
    text = normalize(article)
    return [p[key] for p in value["persons"]
            if isinstance(p, dict) and isinstance(p.get(key), str) and normalize(p[key]) not in text]


def by_novelty(rows: list[dict[str, Any]], key: str, seen: Callable[[Any], bool]) -> dict[str, Any]:
    """Person recall, precision and F1 apart for names that occur in a training article ("seen") and names that do
    not ("unseen"). A predicted person belongs to the group of its own name, so a match stays in one group."""
    counts = {group: Counter() for group in ("seen", "unseen")}
    for r in rows:
        gold = [g for g in r["gold"].get("persons", []) if isinstance(g, dict)]
        predicted = r["value"]["persons"] if r["verdict"] == "ok" else []
        for p, _ in match_persons(predicted, gold, key):
            counts["seen" if seen(p.get(key)) else "unseen"]["matched"] += 1
        for g in gold:
            counts["seen" if seen(g.get(key)) else "unseen"]["gold"] += 1
        for p in predicted:
            counts["seen" if seen(p.get(key)) else "unseen"]["predicted"] += 1
    out = {}
    for group, c in counts.items():
        out[group] = {"persons_gold": c["gold"], "persons_predicted": c["predicted"], "persons_matched": c["matched"],
                      "person_recall": _ratio(c["matched"], c["gold"]),
                      "person_precision": _ratio(c["matched"], c["predicted"]),
                      "person_f1": _f1(c["matched"], c["predicted"], c["gold"]),
                      "ci95": {"person_recall": wilson(c["matched"], c["gold"]),
                               "person_precision": wilson(c["matched"], c["predicted"])}}
    return out


def novelty_gap(groups: dict[str, Any]) -> dict[str, Any]:
    """Seen-name minus unseen-name person recall, with its interval: a gap whose interval lies above 0 means the
    model finds names it met in training more often than new ones, i.e. it partly remembers rather than reads."""
    seen, unseen = groups["seen"], groups["unseen"]
    if not (seen["persons_gold"] and unseen["persons_gold"]):
        return {"seen_minus_unseen": None, "ci95": None}
    return {"seen_minus_unseen": seen["person_recall"] - unseen["person_recall"],
            "ci95": difference_interval(seen["persons_matched"], seen["persons_gold"],
                                        unseen["persons_matched"], unseen["persons_gold"])}


def score(records: list[dict[str, Any]], fields: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """records: {"gold", "text", "truncated"[, "article"]} → (rows with value/verdict/exact, metrics of the split).
    With the article's text, each ok answer is also checked for names the article does not hold."""
    rows = []
    for rec in records:
        value, verdict = judge(rec["text"], rec["truncated"], fields)
        row = {**rec, "value": value, "verdict": verdict, "exact": exact(value, verdict, rec["gold"], fields)}
        if "article" in rec:
            row["names_not_in_article"] = names_not_in(rec["article"], value, fields[0]) if verdict == "ok" else []
        rows.append(row)
    article, person = classification(rows), extraction(rows, fields)
    article["ci95"].update(person.pop("ci95_persons"))
    if all("article" in rec for rec in records):
        person["names_not_in_article"] = sum(len(r["names_not_in_article"]) for r in rows)
    return rows, {**article, **person}


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p: the binomial test of the discordant articles with p = 1/2, which is
    scipy.stats.binomtest(a_only, a_only + b_only, 0.5).pvalue, in integers (no scipy needed); 1 with none."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def discordant(first: Iterable[bool], second: Iterable[bool]) -> tuple[int, int]:
    """(how many articles only `first` holds true for, how many only `second`): what McNemar's test reads."""
    pairs = list(zip(first, second))
    return sum(1 for x, y in pairs if x and not y), sum(1 for x, y in pairs if y and not x)


def paired_found(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """Two models on the same articles: how many articles only `before` found a person in (lost), only `after`
    (gained), and McNemar's exact p. Why: their recall intervals overlap long after the models differ, since
    most articles are answered alike; only the discordant ones tell them apart."""
    lost, gained = discordant(before, after)
    return {"lost": lost, "gained": gained, "p": round(mcnemar_p(lost, gained), 4)}


def confusion_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One {actual, predicted} per article, the shape of DVC's confusion template."""
    return [{"actual": gold_class(r["gold"]), "predicted": answer_class(r["verdict"], r["value"])} for r in rows]
