"""`jinmei-compare`: is one run better than another on the same dev articles, or is the difference noise?

Two runs' rates each come with a Wilson interval, but the intervals of two runs on the *same* articles overlap long
after the runs differ: most articles are answered alike by both, and only the articles they answer differently hold
evidence. So each decision is tested on the paired answers (McNemar's exact test: a binomial test with p = 1/2 on the
discordant articles) and the person-F1 difference gets a paired bootstrap interval (articles resampled, both runs'
counts summed over the same draw). The answers are re-scored with jinmei.eval.scoring, so two runs written by
different versions of the code are judged by one rule. docs/metrics.md ("Comparing runs") describes the output.

    jinmei-compare workspace exp-a1b2c            # the files on disk against a `dvc exp` (or any git rev)
    jinmei-compare main HEAD~1 path/to/folder --json
"""
from __future__ import annotations

import io
import itertools
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jinmei.config.params import load_all
from jinmei.errors import JinmeiError, OneLineParser, positive_int, run_main, show_id
from jinmei.eval.errors import escape
from jinmei.eval.scoring import answer_class, discordant, gold_class, match_persons, mcnemar_p, score

SPLITS = ("dev_all", "dev_positive")
PREDICTIONS = "data/predictions"
RESAMPLES = 2000
LEVEL = 0.05
RUN_HELP = ("`workspace` (data/predictions on disk), a folder holding dev_all.jsonl and dev_positive.jsonl, a git rev "
            "or a `dvc exp` name")
# (key, split, which articles, what the sentence calls it, whether more is better)
DECISIONS = (("false_positive", "dev_all", "gold names nobody", "false positives on Dev-All", False),
             ("found", "dev_positive", "gold names someone", "recall on Dev-Positive", True),
             ("exact", "dev_all", "all", "exact answers on Dev-All", True))


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(ascii(text)[1:-1].split()) if not text.isprintable() else " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def source_text(spec: str, split: str) -> tuple[str, str]:
    """(where, the text of <split>.jsonl) of a run: `workspace`, a folder, or a rev read through dvc.api."""
    if spec == "workspace" or Path(spec).is_dir():
        path = Path(PREDICTIONS if spec == "workspace" else spec) / f"{split}.jsonl"
        if not path.is_file():
            hint = "run `dvc repro eval` (or `dvc checkout data/predictions`)" if spec == "workspace" else \
                "a folder run holds dev_all.jsonl and dev_positive.jsonl, as eval writes them in data/predictions"
            raise JinmeiError(f"{path}: not found; {hint}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise JinmeiError(f"{path}: cannot read it ({e.strerror or e})") from None
        where = str(path)
    else:
        import dvc.api

        where = f"{PREDICTIONS}/{split}.jsonl at {spec}"
        try:
            with dvc.api.open(f"{PREDICTIONS}/{split}.jsonl", rev=spec, mode="rb") as f:
                data = f.read()
        except Exception as e:  # dvc, scmrepo and OS errors alike: a run that cannot be read is the user's to fix
            raise JinmeiError(f"{one_line(spec, 80)}: cannot read {PREDICTIONS}/{split}.jsonl there "
                              f"({type(e).__name__}: {one_line(str(e))}); a run is {RUN_HELP} whose eval ran and whose "
                              "predictions are in the DVC cache (`dvc exp show` lists experiments; `dvc exp pull` "
                              "brings a remote one)") from None
    try:
        return where, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JinmeiError(f"{where}: not UTF-8 (byte {e.start + 1}); it is not a prediction file eval wrote") from None


def read_predictions(where: str, text: str) -> list[dict[str, Any]]:
    """The prediction rows of one file, each checked for what the comparison reads; ids unique."""
    rows, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise JinmeiError(f"{where}:{lineno}: not JSON; it is not a prediction file eval wrote") from None
        gold = row.get("gold") if isinstance(row, dict) else None
        if not (isinstance(row, dict) and "id" in row and isinstance(row.get("raw"), str)
                and isinstance(row.get("truncated"), bool) and isinstance(gold, dict)
                and isinstance(gold.get("persons"), list) and all(isinstance(p, dict) for p in gold["persons"])):
            raise JinmeiError(f'{where}:{lineno}: a prediction row needs "id", "raw", "truncated" and "gold": '
                              '{"persons": [...]}; rerun `dvc repro eval` for this run')
        key = json.dumps(row["id"], sort_keys=True, ensure_ascii=False)
        if key in seen:
            raise JinmeiError(f"{where}:{lineno}: article {show_id(row['id'])} again (first on line {seen[key]}); "
                              "eval writes each article once")
        seen[key] = lineno
        rows.append({**row, "key": key})
    return rows


def outcomes(rows: list[dict[str, Any]], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{article key: what the answer did}, with the same judge, classes and person matching eval uses."""
    records = [{"gold": r["gold"], "text": r["raw"], "truncated": r["truncated"]} for r in rows]
    scored, _ = score(records, fields)
    out = {}
    for r, s in zip(rows, scored):
        gold = r["gold"]["persons"]
        predicted = s["value"]["persons"] if s["verdict"] == "ok" else []
        answered = answer_class(s["verdict"], s["value"])
        empty = gold_class(r["gold"]) == "empty"
        out[r["key"]] = {"id": r["id"], "gold": r["gold"], "verdict": s["verdict"], "gold_empty": empty,
                         "false_positive": empty and answered != "empty",
                         "found": not empty and answered == "non_empty", "exact": s["exact"],
                         "counts": (len(match_persons(predicted, gold, fields[0])), len(predicted), len(gold))}
    return out


def load_run(spec: str, fields: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    return {split: outcomes(read_predictions(*source_text(spec, split)), fields) for split in SPLITS}


def f1_of(sums: np.ndarray) -> np.ndarray:
    """2·tp / (predicted + gold) over the last axis (tp, predicted, gold), 0 where nothing was there."""
    den = sums[..., 1] + sums[..., 2]
    return np.divide(2 * sums[..., 0], den, out=np.zeros(den.shape), where=den > 0)


def f1_interval(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> list[float] | None:
    """95% percentile interval of F1(b) − F1(a) over `resamples` paired bootstrap draws of the articles (rows of a and
    b: one article's tp, predicted, gold). None without articles."""
    n = len(a)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 1_000_000 // n)      # bounded memory: chunk × n article indices at a time
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        diffs[start:start + len(idx)] = f1_of(b[idx].sum(axis=1)) - f1_of(a[idx].sum(axis=1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return [round(float(low), 6), round(float(high), 6)]


def same_articles(a: dict[str, dict], b: dict[str, dict], labels: tuple[str, str]) -> None:
    """Refuse a pair whose dev sets differ: a paired test of different articles measures nothing."""
    names = f"{one_line(labels[0], 80)} and {one_line(labels[1], 80)} are not the same dev articles"
    for split in SPLITS:
        only = [(sorted(set(x[split]) - set(y[split])), x, label)
                for x, y, label in ((a, b, labels[0]), (b, a, labels[1]))]
        if any(keys for keys, _, _ in only):
            said = [f"{len(keys)} only in {one_line(label, 80)}" + (f" (e.g. {show_id(run[split][keys[0]]['id'])})"
                                                                    if keys else "") for keys, run, label in only]
            raise JinmeiError(f"{names}: {split} has {' and '.join(said)}; compare runs evaluated on the same "
                              "data/splits (same split params and corpus)")
        for key, row in a[split].items():
            if row["gold"] != b[split][key]["gold"]:
                raise JinmeiError(f"{names}: {split} article {show_id(row['id'])} has different gold persons; compare "
                                  "runs evaluated on the same data/splits")


def compare_pair(a: dict[str, dict], b: dict[str, dict], labels: tuple[str, str], resamples: int = RESAMPLES,
                 seed: int = 0) -> dict[str, Any]:
    """Every paired number of runs a and b (outcomes per split, as load_run returns them), and the verdict."""
    same_articles(a, b, labels)
    decisions = []
    for key, split, which, _, _ in DECISIONS:
        keys = [k for k, r in a[split].items()
                if which == "all" or r["gold_empty"] == (which == "gold names nobody")]
        pairs = [(a[split][k][key], b[split][k][key]) for k in keys]
        a_only, b_only = discordant((x for x, _ in pairs), (y for _, y in pairs))
        decisions.append({"decision": key, "split": split, "articles": len(keys), "a": sum(x for x, _ in pairs),
                          "b": sum(y for _, y in pairs), "a_only": a_only, "b_only": b_only,
                          "p": mcnemar_p(a_only, b_only)})
    keys = list(a["dev_positive"])
    counts_a = np.array([a["dev_positive"][k]["counts"] for k in keys], dtype=np.int64).reshape(-1, 3)
    counts_b = np.array([b["dev_positive"][k]["counts"] for k in keys], dtype=np.int64).reshape(-1, 3)
    f1_a, f1_b = (round(float(f1_of(c.sum(axis=0))), 6) if len(c) else None for c in (counts_a, counts_b))
    f1 = {"split": "dev_positive", "articles": len(keys), "a": f1_a, "b": f1_b,
          "difference": None if f1_a is None else round(f1_b - f1_a, 6),
          "ci95": f1_interval(counts_a, counts_b, resamples, seed), "resamples": resamples, "seed": seed}
    changes = {split: [{"a": va, "b": vb, "articles": n} for (va, vb), n in sorted(Counter(
        (r["verdict"], b[split][k]["verdict"]) for k, r in a[split].items()
        if r["verdict"] != b[split][k]["verdict"]).items())] for split in SPLITS}
    result = {"a": labels[0], "b": labels[1], "articles": {s: len(a[s]) for s in SPLITS}, "decisions": decisions,
              "person_f1": f1, "verdict_changes": changes}
    result["verdict"] = verdict(result)
    return result


def verdict(pair: dict[str, Any]) -> str:
    """One sentence: which run is better on what at the 5% level, or that the two are not distinguishable."""
    wins: dict[str, list[str]] = {pair["a"]: [], pair["b"]: []}
    for d, (_, _, _, what, more_is_better) in zip(pair["decisions"], DECISIONS):
        if d["p"] < LEVEL:
            better = pair["b"] if (d["b"] > d["a"]) == more_is_better else pair["a"]
            wins[better].append(f"{what} ({d['a']} vs {d['b']} of {d['articles']}, McNemar p = {d['p']:.2g})")
    f1 = pair["person_f1"]
    if f1["ci95"] and (f1["ci95"][0] > 0 or f1["ci95"][1] < 0):
        better = pair["b"] if f1["difference"] > 0 else pair["a"]
        wins[better].append(f"person F1 on Dev-Positive ({f1['a']:.3f} vs {f1['b']:.3f}, 95% interval of the "
                            f"difference {f1['ci95'][0]:+.3f} to {f1['ci95'][1]:+.3f})")
    if not any(wins.values()):
        return (f"{pair['a']} and {pair['b']} are not distinguishable at the 5% level: McNemar p ≥ 0.05 on false "
                "positives, recall and exact answers, and the person-F1 difference's 95% interval contains 0.")
    said = [f"{label} is better on " + " and ".join(items) for label, items in wins.items() if items]
    return ("A trade-off: " if len(said) == 2 else "") + "; ".join(said) + "."


def markdown(pairs: list[dict[str, Any]]) -> str:
    names = {"false_positive": "false positives (Dev-All, gold names nobody)",
             "found": "recall: names someone (Dev-Positive)", "exact": "exact answers (Dev-All)"}
    lines = []
    for pair in pairs:
        a, b = escape(pair["a"]), escape(pair["b"])
        lines += [f"## {a} vs {b}", "", f"| decision | articles | {a} | {b} | only {a} | only {b} | McNemar p |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {names[d['decision']]} | {d['articles']} | {d['a']} | {d['b']} | {d['a_only']} | {d['b_only']} | "
                  f"{d['p']:.3g} |" for d in pair["decisions"]]
        f1 = pair["person_f1"]
        if f1["a"] is None:
            lines += ["", "person F1 (Dev-Positive): no articles"]
        else:
            low, high = f1["ci95"]
            lines += ["", f"person F1 (Dev-Positive, {f1['articles']} articles): {a} {f1['a']:.3f}, {b} {f1['b']:.3f}; "
                          f"{b} − {a} = {f1['difference']:+.3f}, 95% paired bootstrap interval [{low:+.3f}, "
                          f"{high:+.3f}] ({f1['resamples']:,} resamples, seed {f1['seed']})"]
        changed = [f"{split}: " + (", ".join(f"{c['a']} → {c['b']} {c['articles']}"
                                             for c in pair["verdict_changes"][split]) or "none") for split in SPLITS]
        lines += ["", f"verdict changes {a} → {b}: " + "; ".join(changed), "",
                  f"**{escape(pair['verdict'])}**", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = OneLineParser(prog="jinmei-compare", description="Compare the eval answers of two or more runs on the same dev "
                 "articles: paired tests, not overlapping intervals.")
    ap.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)
    ap.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of markdown")
    ap.add_argument("--resamples", type=positive_int(), default=RESAMPLES, help="bootstrap resamples (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default %(default)s)")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error("give two runs or more")
    fields = list(load_all().schema.fields)
    runs = [(spec, load_run(spec, fields)) for spec in args.runs]
    pairs = [compare_pair(a, b, (la, lb), args.resamples, args.seed)
             for (la, a), (lb, b) in itertools.combinations(runs, 2)]
    text = (json.dumps({"runs": args.runs, "pairs": pairs}, ensure_ascii=False, indent=1) if args.json
            else markdown(pairs))
    out = sys.stdout.buffer if isinstance(sys.stdout, io.TextIOWrapper) else None
    if out is None:
        sys.stdout.write(text + "\n")
    else:                    # UTF-8 whatever the locale, as jinmei-predict
        sys.stdout.flush()
        out.write((text + "\n").encode("utf-8"))
        out.flush()


def cli() -> None:
    """The `jinmei-compare` console script (pyproject.toml [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
