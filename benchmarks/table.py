"""The decision table from saved predictions: every count re-scored by the eval stage's own scoring, then
checked against the rates that folder's metrics/eval.json printed, so a row in the README is never copied by hand.

    python benchmarks/table.py base=benchmarks/results/at-scale/run-2026-12-02c \
        stage1-only=benchmarks/results/at-scale/run-2026-12-04/lanes/stage1-only

A folder holds predictions/dev_all.jsonl[.xz], predictions/dev_positive.jsonl[.xz] and metrics/details/eval.json
(metrics/eval.json in run folders written before the headline file became flat). Exit 1 when a re-scored rate
differs from the folder's eval.json.
A second table puts each row against the first: Dev-Positive person precision with its Wilson interval (are two
rows' differences noise?) and how many answers are character for character the first row's (how far two trainings
moved apart).
"""
from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

from jinmei.files import read_jsonl
from jinmei.config.params import parse, read_yaml
from jinmei.eval.scoring import score


def read_predictions(folder: Path, split: str) -> list[dict]:
    path = folder / "predictions" / f"{split}.jsonl"
    if path.exists():
        return read_jsonl(path)
    if path.with_suffix(".jsonl.xz").exists():   # results folders keep them xz-compressed
        with lzma.open(path.with_suffix(".jsonl.xz"), "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    raise SystemExit(f"{folder}/predictions: no {split}.jsonl or {split}.jsonl.xz")


def row(label: str, folder: Path, fields: list[str], first: dict | None):
    """The row's two table lines, its mismatches with eval.json, and its answers by split and id. first: the first
    row's answers (None while scoring the first row itself)."""
    details = folder / "metrics" / "details" / "eval.json"   # today's layout; older run folders keep the nested
    printed = json.loads((details if details.exists() else folder / "metrics" / "eval.json").read_text(encoding="utf-8"))
    scored, answers = {}, {}
    for split in ("dev_all", "dev_positive"):
        predictions = read_predictions(folder, split)
        records = [{"gold": r["gold"], "text": r["raw"], "truncated": r["truncated"]} for r in predictions]
        scored[split] = score(records, fields)[1]
        answers[split] = {r["id"]: r["raw"] for r in predictions}
    reference = first or answers
    same = {split: sum(reference[split].get(i) == raw for i, raw in answers[split].items()) for split in answers}
    mismatches = [f"{split}.{key}: eval.json {printed[split][key]}, re-scored {scored[split][key]:.4f}"
                  for split, keys in (("dev_all", ("false_positive_rate", "json_parse_rate")),
                                      ("dev_positive", ("recall", "person_f1")))
                  for key in keys if abs(printed[split][key] - scored[split][key]) > 5e-5]
    all_, pos = scored["dev_all"], scored["dev_positive"]
    fp = round(all_["false_positive_rate"] * all_["n_gold_empty"])
    parsed = round(all_["json_parse_rate"] * all_["n"])
    found = round(pos["recall"] * pos["n_gold_positive"])
    cells = [label, f"{fp:,} / {all_['n_gold_empty']:,}", f"{parsed:,} / {all_['n']:,}",
             f"{found:,} / {pos['n_gold_positive']:,}", f"{pos['person_f1']:.3f}",
             " / ".join("—" if pos["field_recall"][f] is None else f"{pos['field_recall'][f]:.3f}"
                        for f in fields[1:]),   # — : no gold person has that field
             f"{all_['exact_match']:.1%} / {pos['exact_match']:.1%}"]
    low, high = pos["ci95"]["person_precision"]
    against_first = [label, f"{pos['person_precision']:.3f} [{low:.3f}, {high:.3f}]",
                     f"{same['dev_all']:,} / {all_['n']:,}", f"{same['dev_positive']:,} / {pos['n']:,}"]
    return "| " + " | ".join(cells) + " |", "| " + " | ".join(against_first) + " |", mismatches, answers


def main(args: list[str]) -> int:
    if not args or any("=" not in a for a in args):
        raise SystemExit(__doc__)
    lines, against_first, bad, first = [], [], [], None
    for arg in args:
        label, folder = arg.split("=", 1)
        folder = Path(folder)   # a lane folder has no params.yaml: its run's, above it, has the schema's fields
        params_file = next(p / "params.yaml" for p in (folder, *folder.resolve().parents) if (p / "params.yaml").exists())
        fields = parse(read_yaml(params_file)).schema.fields
        line, against, mismatches, answers = row(label, folder, fields, first)
        first = first or answers
        lines.append(line)
        against_first.append(against)
        bad += [f"{label}: {m}" for m in mismatches]
    print(f"| row | Dev-All false positives | Dev-All JSON parse | Dev-Positive recall | person F1 | "
          f"field recall {' / '.join(fields[1:])} | exact match Dev-All / Dev-Positive |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    print(f"\n| row | Dev-Positive person precision [Wilson 95%] | answers identical to {args[0].split('=')[0]}: "
          "Dev-All | Dev-Positive |\n|---|---:|---:|---:|")
    print("\n".join(against_first))
    if bad:
        print("re-scored counts differ from eval.json:\n  " + "\n  ".join(bad), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
