"""Validate the raw corpus, then cut deterministic, disjoint evaluation and training files.

Order is a seeded hash of each article's normalised text: it depends on neither the ids nor the order
of lines in the corpus, so the same articles give the same split. Articles whose texts are equal after
NFKC normalisation and whitespace removal count as one (later ones dropped), so no article can sit in
an evaluation file and, reworded by a space, in a training file.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any

from jinmei.data.corpus import load_corpus
from jinmei.errors import JinmeiError
from jinmei.files import atomic_path, write_json, write_jsonl

FILES = ("dev_all", "dev_positive", "sanity", "train_positive", "train_empty")
WHITESPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The form in which two texts count as the same article."""
    return WHITESPACE.sub("", unicodedata.normalize("NFKC", text))


def seeded_order(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: hashlib.sha256(f"{seed}\n{normalise(r['text'])}".encode()).hexdigest())


def drop_near_duplicates(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    seen: set[str] = set()
    kept = []
    for record in records:
        key = normalise(record["text"])
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept, len(records) - len(kept)


def cut(records: list[dict[str, Any]], split, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The five splits, or a JinmeiError naming the params.yaml key to lower (split: the params section)."""
    dev_all_size, dev_positive_size = split.dev_all_size, split.dev_positive_size
    sanity_size, share = split.sanity_size, split.dev_all_positive_share
    ordered = seeded_order(records, seed)
    positives = [r for r in ordered if r["output"]["persons"]]
    empties = [r for r in ordered if not r["output"]["persons"]]
    dev_all_pos = round(dev_all_size * share)
    dev_all_empty = dev_all_size - dev_all_pos
    if dev_all_pos > len(positives):
        raise JinmeiError(
            f"split.dev_all_size={dev_all_size} x split.dev_all_positive_share={share} needs {dev_all_pos} positives "
            f"but the corpus has only {len(positives)}; lower split.dev_all_size or split.dev_all_positive_share, "
            "or supply more positives"
        )
    if dev_all_empty > len(empties):
        raise JinmeiError(
            f"split.dev_all_size={dev_all_size} needs {dev_all_empty} empty articles but the corpus has only "
            f"{len(empties)}; lower split.dev_all_size, raise split.dev_all_positive_share, or supply more empties"
        )
    left = len(positives) - dev_all_pos
    if dev_positive_size > left:
        raise JinmeiError(
            f"split.dev_positive_size={dev_positive_size} needs {dev_positive_size} positives but only {left} remain "
            f"after dev_all; lower split.dev_positive_size or supply more positives"
        )
    train_positive = positives[dev_all_pos + dev_positive_size:]
    train_empty = empties[dev_all_empty:]
    if len(train_positive) < max(sanity_size, 1):
        raise JinmeiError(
            f"only {len(train_positive)} positives remain for training after dev_all ({dev_all_pos}) and "
            f"dev_positive ({dev_positive_size}), and split.sanity_size={sanity_size} (at least 1) must come from them; "
            "lower split.dev_positive_size, split.dev_all_size or split.sanity_size, or supply more positives"
        )
    if not train_empty:
        raise JinmeiError(
            f"no empty articles remain for training after dev_all took {dev_all_empty}; lower split.dev_all_size "
            "or supply more empty articles"
        )
    dev_all = positives[:dev_all_pos] + empties[:dev_all_empty]
    return {
        "dev_all": seeded_order(dev_all, seed),
        "dev_positive": positives[dev_all_pos:dev_all_pos + dev_positive_size],
        "sanity": train_positive[:sanity_size],
        "train_positive": train_positive,
        "train_empty": train_empty,
    }


def check_disjoint(splits: dict[str, list[dict[str, Any]]]) -> None:
    """No normalised text in two of dev_all, dev_positive and training (sanity is a training subset)."""
    owner: dict[str, str] = {}
    for name in ("dev_all", "dev_positive", "train_positive", "train_empty"):
        for record in splits[name]:
            key = normalise(record["text"])
            if key in owner:
                raise JinmeiError(f"internal: article {record['id']} is in both {owner[key]} and {name}")
            owner[key] = name


def split_metrics(report: dict[str, Any], near_dropped: int, splits: dict[str, list[dict[str, Any]]]) -> dict:
    metrics: dict[str, Any] = {
        "corpus_lines": report["lines"],
        "records_accepted": report["accepted"],
        "records_rejected": 0,  # any bad line stops the stage: nothing is silently skipped
        "blank_lines": report["blank_lines"],
        "duplicates_exact_dropped": report["duplicate_texts_dropped"],
        "duplicates_conflicting_labels": report["duplicate_texts_conflicting"],
        "duplicates_near_dropped": near_dropped,
        "corpus_positive_share": round(report["positives"] / report["accepted"], 4),
    }
    for name in FILES:
        rows = splits[name]
        positive = sum(1 for r in rows if r["output"]["persons"])
        metrics[f"{name}_count"] = len(rows)
        metrics[f"{name}_positive_share"] = round(positive / len(rows), 4) if rows else 0.0
    persons = [len(r["output"]["persons"]) for r in splits["train_positive"]]
    metrics["train_persons_per_positive"] = round(sum(persons) / len(persons), 4)
    return metrics


EXAMPLES = 5


def oddities(records: list[dict[str, Any]], fields: list[str], specials: list[str]) -> dict[str, list[str]]:
    """Ids of articles that contain a special-token string of the base model's tokenizer, and of articles with a
    person whose name (NFKC, whitespace-insensitive) does not occur in the text: a label no model can extract."""
    found: dict[str, list[str]] = {"special_tokens": [], "name_not_in_text": []}
    specials = sorted(set(s for s in specials if s), key=len, reverse=True)
    for r in records:
        if any(s in r["text"] for s in specials):
            found["special_tokens"].append(r["id"])
        text = normalise(r["text"])
        if any(normalise(p.get(fields[0]) or "") not in text for p in r["output"]["persons"]):
            found["name_not_in_text"].append(r["id"])
    return found


def apply_policy(records: list[dict[str, Any]], found: dict[str, list[str]], split, corpus: Path) -> tuple[list, dict]:
    """warn: count and keep; error: stop naming the first ids; drop: leave those articles out (counted)."""
    report, drop = {}, set()
    for kind, ids in found.items():
        policy = getattr(split, f"on_{kind}")
        report[kind] = {"count": len(ids), "examples": ids[:EXAMPLES], "policy": policy}
        if ids and policy == "error":
            what = {"special_tokens": "contain special-token strings of the base model's tokenizer (they stay text: "
                                      "jinmei tokenizes articles with special-token parsing off)",
                    "name_not_in_text": "have a person whose name does not occur in the article text"}[kind]
            raise JinmeiError(f"{corpus}: {len(ids)} article(s) {what}, e.g. {', '.join(ids[:EXAMPLES])}; fix the "
                              f"corpus, or set split.on_{kind}: warn (keep them) or drop (leave them out)")
        if ids and policy == "drop":
            drop |= set(ids)
        if ids and policy == "warn":
            print(f"split: warning: {len(ids)} article(s) with {kind.replace('_', ' ')}, e.g. {', '.join(ids[:3])} "
                  f"(kept; split.on_{kind}: error or drop to change that)")
    kept = [r for r in records if r["id"] not in drop]
    report["dropped"] = len(records) - len(kept)
    return kept, report


def run(corpus: Path, fields: list[str], split, seed: int, out_dir: Path, metrics_file: Path,
        specials: list[str] = ()) -> None:
    """Check the corpus, cut the splits, then write them (the folder swapped in whole) and the report."""
    records, report = load_corpus(corpus, list(fields))
    records, odd = apply_policy(records, oddities(records, list(fields), list(specials)), split, corpus)
    records, near_dropped = drop_near_duplicates(records)
    splits = cut(records, split, seed)
    check_disjoint(splits)
    metrics = split_metrics(report, near_dropped, splits)
    metrics["oddities"] = odd
    # Everything is checked: only now touch the outputs.
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in FILES:
            write_jsonl(tmp / f"{name}.jsonl", splits[name])
    write_json(metrics_file, metrics)
    print("split: " + ", ".join(f"{name} {metrics[name + '_count']}" for name in FILES)
          + f" (dropped {report['duplicate_texts_dropped']} exact, {near_dropped} near duplicates)")
