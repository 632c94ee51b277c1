"""Greedy answers of the quantized GGUF on dev_all and dev_positive, scored.

What the user ships is the GGUF, so that is what is measured. A small dev_positive subset is also
answered by the stage1 adapter and the merged (unquantized) model with transformers, so a recall loss
can be pinned on stage2 or on quantization. docs/metrics.md defines every number written here.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jinmei.eval import advice as advice_mod
from jinmei.eval import errors as errors_mod
from jinmei.infer import engine as llm
from jinmei.errors import JinmeiError, show_id
from jinmei.files import atomic_path, write_json
from jinmei.infer.generate import greedy_answers
from jinmei.data.names import TRAINING_SPLITS, name_index
from jinmei.eval.scoring import answer_class, by_novelty, confusion_rows, novelty_gap, paired_found, score

SPLITS = ("dev_all", "dev_positive")
COMPARE_KEYS = ("recall", "person_f1", "schema_valid_rate", "truncated")
console = Console()


def read_split(path: Path) -> list[dict[str, Any]]:
    """Split rows {id, text, output.persons}; a malformed row is named by file and line."""
    return [row for _, row in read_split_numbered(path)]


def read_split_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) pairs of a split file: every message about an article names its file and line."""
    if not path.exists():
        raise JinmeiError(f"{path}: not found; run `dvc repro split`")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise JinmeiError(f"{path}:{lineno}: not JSON ({e.msg}); rerun `dvc repro split`") from None
            if not (isinstance(row, dict) and isinstance(row.get("text"), str) and "id" in row
                    and isinstance(row.get("output"), dict) and isinstance(row["output"].get("persons"), list)):
                raise JinmeiError(f'{path}:{lineno}: a row needs "id", "text" and "output": {{"persons": [...]}}')
            rows.append((lineno, row))
    return rows


def over_budget(base: Path, system: str, numbered: dict[str, list[tuple[int, dict[str, Any]]]], ev,
                splits_dir: Path) -> dict[str, int]:
    """{text: prompt tokens} of the articles whose prompt does not fit eval.n_ctx with eval.max_new_tokens, measured
    with models/base's tokenizer and chat template as split measured them (the GGUF's tokenizer gives the same ids:
    quantize checks it). Eval decodes none of them: each is one failure (verdict truncated), counted as `too_long`,
    never a refused run; split.too_long: keep is how one gets here (split refuses, cuts or drops them otherwise)."""
    from transformers import AutoTokenizer

    from jinmei.template import chat

    if not base.exists():
        raise JinmeiError(f"{base}: not found; run `dvc repro base` (eval measures every prompt with its tokenizer)")
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    fmt = chat.chat_format(tokenizer)
    over: dict[str, int] = {}
    warned = 0
    for name, rows in numbered.items():
        for line, row in rows:
            n = over.get(row["text"]) or len(chat.prompt_ids(tokenizer, fmt, system, row["text"]))
            if n + ev.max_new_tokens <= ev.n_ctx:
                continue
            over[row["text"]] = n
            warned += 1
            if warned <= 10:
                print(f"eval: warning: {splits_dir / (name + '.jsonl')}:{line}: article {show_id(row['id'])} needs {n} "
                      f"prompt + {ev.max_new_tokens} answer tokens, more than eval.n_ctx={ev.n_ctx}: not decoded, "
                      "scored as a failure (verdict truncated); raise eval.n_ctx, or set split.too_long: cut or drop",
                      flush=True)
    if warned > 10:
        print(f"eval: warning: {warned - 10} more article(s) too long for eval.n_ctx={ev.n_ctx}, scored as failures "
              "(prediction rows with too_long: true)", flush=True)
    return over


def decode_gguf(gguf: Path, system: str, texts: list[str], ev, fields: list[str]):
    """Answers of the GGUF for each distinct text (an article in both splits is decoded once)."""
    unique = list(dict.fromkeys(texts))
    if not unique:  # every article too long for eval.n_ctx (over_budget): nothing to decode
        return {}, {k: 0 for k in ("articles", "seconds", "articles_per_s", "prompt_tokens_per_s",
                                   "generated_tokens_per_s", "prompt_tokens", "generated_tokens")}
    with Progress(TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(gguf.name, total=len(unique))
        start = time.perf_counter()
        completions = llm.complete_all(
            gguf, system, unique, n_ctx=ev.n_ctx, n_threads=ev.n_threads, workers=ev.workers,
            max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size,
            n_batch=ev.n_batch, grammar_fields=fields if ev.grammar else None,
            progress=lambda n: bar.advance(task, n))
        seconds = time.perf_counter() - start
    prompt_tokens = sum(c.prompt_tokens for c in completions)
    generated = sum(c.generated_tokens for c in completions)
    throughput = {
        "articles": len(unique),
        "seconds": round(seconds, 2),
        "articles_per_s": round(len(unique) / seconds, 3),
        "prompt_tokens_per_s": round(prompt_tokens / seconds, 1),
        "generated_tokens_per_s": round(generated / seconds, 1),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
    }
    return dict(zip(unique, completions)), throughput


def compare_models(base: Path, stage1: Path, merged: Path, system: str, rows: list[dict[str, Any]],
                   gguf_rows: list[dict[str, Any]], fields: list[str], max_new_tokens: int,
                   batch: int) -> dict[str, Any]:
    """Recall and F1 of stage1 (base + adapter), merged stage2 and the GGUF on the same articles."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in (base, stage1, merged):
        if not path.exists():
            raise JinmeiError(f"{path}: not found; run the stages before eval (or set eval.compare_subset: 0)")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    texts = [r["text"] for r in rows]
    out: dict[str, Any] = {"n": len(rows)}
    found: dict[str, list[bool]] = {}

    def summary(name, scored_rows, m):
        found[name] = [answer_class(r["verdict"], r["value"]) == "non_empty" for r in scored_rows]
        return {**{k: m[k] for k in COMPARE_KEYS}, "recall_ci95": m["ci95"]["recall"],
                "answered_empty_rate": m["answered_empty_rate"]}

    def scored(name, answers):
        records = [{"gold": r["output"], "text": text, "truncated": hit} for r, (text, hit) in zip(rows, answers)]
        return summary(name, *score(records, fields))

    for name, load in (
        ("stage1", lambda: PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base, dtype=dtype, local_files_only=True), stage1)),
        ("merged", lambda: AutoModelForCausalLM.from_pretrained(merged, dtype=dtype, local_files_only=True)),
    ):
        console.print(f"[bold]eval[/] compare: {name} on {len(rows)} dev_positive articles (transformers, greedy)")
        tokenizer = AutoTokenizer.from_pretrained(merged if name == "merged" else base, local_files_only=True)
        model = load()
        if torch.cuda.is_available():
            model = model.to("cuda")
        out[name] = scored(name, greedy_answers(model, tokenizer, system, texts, max_new_tokens, batch))
        del model
    out["gguf"] = summary("gguf", *score([{"gold": r["gold"], "text": r["raw"], "truncated": r["truncated"]}
                                          for r in gguf_rows], fields))
    out["paired"] = {f"{a}_{b}": paired_found(found[a], found[b]) for a, b in (("stage1", "merged"), ("merged", "gguf"))}
    return out


def prediction_row(row: dict[str, Any], scored: dict[str, Any], completion: llm.Completion,
                   too_long: bool = False) -> dict[str, Any]:
    """One line of data/predictions/<split>.jsonl: the answer with its verdict, beside the article and its gold, so
    that metrics/errors.md (and a person) can read a failure without joining it back to the split."""
    return {"id": row["id"], "verdict": scored["verdict"], "exact": scored["exact"], "raw": completion.text,
            "parsed": scored["value"], "gold": row["output"], "truncated": completion.truncated,
            "prompt_tokens": completion.prompt_tokens, "generated_tokens": completion.generated_tokens,
            "too_long": too_long, "names_not_in_article": scored.get("names_not_in_article", []),
            "text": row["text"]}


def rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    return obj


def summary_table(metrics: dict[str, Any], warnings: list[str] | None = None) -> Table:
    """The eval table: each rate with its 95% interval; a level the advice flags is marked."""
    def fmt(v, ci=None):
        text = "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")  # digits as the rate

    t = Table(title="eval (GGUF, greedy)" + (" — JSON grammar ON" if metrics["engine"]["grammar"] else ""))
    t.add_column("metric")
    t.add_column("dev_all", justify="right")
    t.add_column("dev_positive", justify="right")
    a, p = metrics["dev_all"], metrics["dev_positive"]
    flagged = set(warnings or ())
    for key in ("n", "false_positive_rate", "recall", "person_precision", "person_recall", "person_f1",
                "exact_match", "json_parse_rate", "schema_valid_rate", "answered_empty_rate", "truncated"):
        mark = " [bold red](!)[/]" if key in flagged else ""
        t.add_row(key + mark, fmt(a.get(key), a.get("ci95", {}).get(key)), fmt(p.get(key), p.get("ci95", {}).get(key)))
    for group, g in p.get("names", {}).items():   # names that do / do not occur in a training article
        t.add_row(f"person_recall, {group} names (n={g['persons_gold']})", "",
                  fmt(g["person_recall"], g["ci95"]["person_recall"]))
        t.add_row(f"person_f1, {group} names", "", fmt(g["person_f1"]))
    if "names_recall_gap" in p:
        gap = p["names_recall_gap"]
        t.add_row("person_recall gap, seen − unseen", "", fmt(gap["seen_minus_unseen"], gap["ci95"]))
    for f, v in p["field_recall"].items():
        t.add_row(f"field_recall.{f}", "", fmt(v))
    for f, v in p["field_missing"].items():
        t.add_row(f"field_missing.{f}", fmt(a["field_missing"].get(f)), fmt(v))
    th = metrics["throughput"]
    t.add_row("articles/s", fmt(th["articles_per_s"]), "")
    t.add_row("prompt / generated tokens/s", f"{th['prompt_tokens_per_s']:.0f} / {th['generated_tokens_per_s']:.0f}", "")
    cmp_ = metrics.get("compare")
    if cmp_:
        for name in ("stage1", "merged", "gguf"):
            t.add_row(f"compare[{cmp_['n']}] {name} recall / F1", "",
                      f"{fmt(cmp_[name]['recall'], cmp_[name].get('recall_ci95'))} / {fmt(cmp_[name]['person_f1'])}")
    return t


def headline(metrics: dict[str, Any], stage1: dict[str, Any] | None = None, stage2: dict[str, Any] | None = None,
             eval_seconds: float | None = None) -> dict[str, Any]:
    """The one row `dvc metrics show` and `dvc exp show` print: what a user compares between runs, flat and short so
    the table fits a terminal. Intervals, per-field recall, the compare and the rest: metrics/details/eval.json."""
    dev_all, dev_pos, s1, s2 = metrics["dev_all"], metrics["dev_positive"], stage1 or {}, stage2 or {}
    train_seconds = sum(s.get("seconds") or 0 for s in (s1, s2))
    return {
        "false_positive_rate": dev_all.get("false_positive_rate"),
        "parse_rate": dev_all.get("json_parse_rate"),
        "recall": dev_pos.get("recall"),
        "person_f1": dev_pos.get("person_f1"),
        "dev_all_n": dev_all.get("n"),
        "dev_positive_n": dev_pos.get("n"),
        "stage1_loss": s1.get("last_loss"),
        "stage2_loss": s2.get("last_loss"),
        "stage1_steps": s1.get("steps"),
        "stage2_steps": s2.get("steps"),
        "train_minutes": round(train_seconds / 60, 1) if train_seconds else None,
        "eval_minutes": round(eval_seconds / 60, 1) if eval_seconds is not None else None,
    }


def run(p, *, gguf: Path, splits_dir: Path, base: Path, stage1: Path, merged: Path, metrics_file: Path,
        details_file: Path, predictions_dir: Path, plots_dir: Path, advice_file: Path, errors_file: Path,
        stage1_metrics: Path, stage2_metrics: Path) -> None:
    """Decode, score, compare, then write every output atomically and print the table and the advice."""
    started = time.time()
    ev, fields, system = p.eval, list(p.schema.fields), p.prompt.system
    if not gguf.exists():
        raise JinmeiError(f"{gguf}: GGUF file not found")
    previous = advice_mod.read_optional_json(details_file)     # read before it is overwritten
    numbered = {name: read_split_numbered(splits_dir / f"{name}.jsonl") for name in SPLITS}
    splits = {name: [row for _, row in rows] for name, rows in numbered.items()}
    too_long = over_budget(base, system, numbered, ev, splits_dir)    # one failure each, never a refused run
    answers, throughput = decode_gguf(gguf, system, [r["text"] for rows in splits.values() for r in rows
                                                     if r["text"] not in too_long], ev, fields)
    answers.update((text, llm.Completion(text="", prompt_tokens=n, generated_tokens=0, truncated=True))
                   for text, n in too_long.items())

    metrics: dict[str, Any] = {"engine": {"grammar": int(bool(ev.grammar)), "max_new_tokens": ev.max_new_tokens,
                                          "batch_size": ev.batch_size, "n_batch": ev.n_batch,
                                          "workers": len(llm.worker_devices(ev.workers, llm.visible_gpus())),
                                          "n_threads": ev.n_threads}}
    predictions, plots, found = {}, {}, {}
    seen = name_index(row["text"] for name in TRAINING_SPLITS for row in read_split(splits_dir / f"{name}.jsonl"))
    for name, rows in splits.items():
        records = [{"gold": r["output"], "text": answers[r["text"]].text, "truncated": answers[r["text"]].truncated,
                    "article": r["text"]} for r in rows]
        scored_rows, m = score(records, fields)
        predictions[name] = [prediction_row(r, s, answers[r["text"]], r["text"] in too_long)
                             for r, s in zip(rows, scored_rows)]
        found[name] = [errors_mod.analyse(r, fields) for r in predictions[name]]
        metrics[name] = {**m, "too_long": sum(1 for r in rows if r["text"] in too_long),
                         "name_errors": errors_mod.name_error_counts(predictions[name], fields, found[name])}
        plots[f"confusion_{name}"] = confusion_rows(scored_rows)
        if name == "dev_positive":
            metrics[name]["names"] = by_novelty(scored_rows, fields[0], seen)
            metrics[name]["names_recall_gap"] = novelty_gap(metrics[name]["names"])
    metrics["throughput"] = throughput

    n_compare = min(ev.compare_subset, len(splits["dev_positive"]))
    if n_compare > 0:
        metrics["compare"] = compare_models(base, stage1, merged, system, splits["dev_positive"][:n_compare],
                                            predictions["dev_positive"][:n_compare], fields, ev.max_new_tokens,
                                            ev.compare_batch_size)
    metrics = rounded(metrics)
    field_recall = [{"field": f, "recall": v} for f, v in metrics["dev_positive"]["field_recall"].items()]
    errors_page = errors_mod.report(predictions, fields, found=found)

    # everything is computed: now write, each file atomically
    for name, rows in predictions.items():
        with atomic_path(predictions_dir / f"{name}.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with atomic_path(plots_dir) as tmp:
        tmp.mkdir(parents=True)
        for name, rows in plots.items():
            (tmp / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        (tmp / "field_recall.json").write_text(json.dumps(field_recall, indent=1) + "\n", encoding="utf-8")
    stage1_report = advice_mod.read_optional_json(stage1_metrics)
    write_json(details_file, metrics)
    write_json(metrics_file, headline(metrics, stage1_report, advice_mod.read_optional_json(stage2_metrics),
                                      time.time() - started))
    text = advice_mod.advise(metrics, p, stage1_report, previous)
    console.print(summary_table(metrics, advice_mod.low_levels(metrics, p)))
    advice_mod.write_advice(advice_file, text)
    errors_mod.write_text(errors_file, errors_page)
    console.print(text)
