"""Eval throughput: the naive loop vs the project's eval engine, same articles, same model, one run.

    python benchmarks/eval_throughput.py metrics/eval_throughput.json [--n 40] [--max-new-tokens 32]

Rows: naive = one `create_chat_completion` per article from a fresh state; library cache = the same calls
without the reset (llama-cpp-python's own longest-prefix reuse); engine = jinmei.infer.engine as eval runs it
(params `eval`), plus variants (workers, batched decode). Every row reports how many answers are identical
to the naive ones (docs/metrics.md "Throughput"). With the untrained bundled model the answers run to the
token limit, so keep --max-new-tokens near what a trained model writes (a one-person answer is ~70 tokens,
an empty one 6).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from jinmei.infer import engine as llm  # noqa: E402
from jinmei.model.basemodel import bundled_gguf_path  # noqa: E402
from jinmei.template import chat  # noqa: E402
from jinmei.errors import JinmeiError, run_main  # noqa: E402
from jinmei.files import read_jsonl, write_json  # noqa: E402
from jinmei.config.params import load_all  # noqa: E402


def row(name: str, answers: list[llm.Completion], seconds: float, reference, max_new: int, **extra):
    n = len(answers)
    return {
        "name": name, **extra, "articles": n, "seconds": round(seconds, 2),
        "articles_per_s": round(n / seconds, 3),
        "prompt_tokens_per_s": round(sum(a.prompt_tokens for a in answers) / seconds, 1),
        "generated_tokens_per_s": round(sum(a.generated_tokens for a in answers) / seconds, 1),
        "generated_tokens": sum(a.generated_tokens for a in answers),
        "identical_to_naive": sum(llm.same_answer(r, a, max_new) for r, a in zip(reference, answers))
        if reference else n,
    }


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="JSON file for the results")
    ap.add_argument("--gguf", type=Path, help="default: the quantize stage's GGUF if it exists, else the bundled base")
    ap.add_argument("--articles", type=Path, default=Path("data/splits/dev_all.jsonl"))
    ap.add_argument("--n", type=int, default=40, help="articles to decode (the first N of --articles)")
    ap.add_argument("--max-new-tokens", type=int, help="default: eval.max_new_tokens for a trained GGUF, 32 for the base")
    ap.add_argument("--batch-size", type=int, default=8, help="for the batched-decode row")
    args = ap.parse_args(argv)
    params = load_all()
    ev = params.eval
    system = params.prompt.system
    try:
        gguf = args.gguf or llm.gguf_path(params.quantize)
    except JinmeiError:
        gguf = bundled_gguf_path()
    trained = gguf.resolve() != bundled_gguf_path().resolve()
    max_new = args.max_new_tokens or (ev.max_new_tokens if trained else 32)
    if not args.articles.exists():
        raise JinmeiError(f"{args.articles}: not found; run `dvc repro split` or pass --articles")
    articles = [r["text"] for r in read_jsonl(args.articles)][: args.n]
    threads = ev.n_threads
    console = Console(width=150)
    console.print(f"[bold]eval throughput[/]: {len(articles)} articles, {gguf.name}, max_new_tokens={max_new}, "
                  f"{threads} threads, {llm.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    load_start = os.getloadavg()[0]
    results = []

    model = llm.load_llama(gguf, n_ctx=ev.n_ctx, n_threads=threads)
    fmt = llm.GgufChat.of(model).fmt

    def messages(system, article):
        return chat.messages(fmt, system, article)

    model.create_chat_completion(messages(system, "warm-up"), max_tokens=1, temperature=0.0)
    naive, secs = timed(lambda: [llm.naive_complete(model, system, a, max_new) for a in articles])
    results.append(row("naive (fresh state per article)", naive, secs, None, max_new, workers=1, threads=threads))

    def library_cache():
        out = []
        for a in articles:
            start = time.perf_counter()
            reply = model.create_chat_completion(messages(system, a), temperature=0.0, max_tokens=max_new)
            out.append(llm.Completion(reply["choices"][0]["message"]["content"] or "", reply["usage"]["prompt_tokens"],
                                      reply["usage"]["completion_tokens"],
                                      reply["choices"][0]["finish_reason"] == "length", time.perf_counter() - start))
        return out
    model.reset()
    answers, secs = timed(library_cache)
    results.append(row("library prefix cache (no reset)", answers, secs, naive, max_new, workers=1, threads=threads))
    model.close()

    variants = [("engine, as params eval", ev.workers, ev.batch_size)]
    if threads >= 2 and ev.workers != 2:
        variants.append(("engine, 2 workers x 1 thread", 2, 1))
    variants.append((f"engine, batched decode x{args.batch_size} (not bitwise)", 1, args.batch_size))
    if threads >= 2:
        variants.append((f"engine, 2 workers x batched x{args.batch_size} (not bitwise)", 2, args.batch_size))
    for name, workers, batch in variants:
        answers, secs = timed(lambda: llm.complete_all(gguf, system, articles, n_ctx=ev.n_ctx, n_threads=threads,
                                                       workers=workers, max_new_tokens=max_new, batch_size=batch))
        results.append(row(name, answers, secs, naive, max_new, workers=workers, threads=threads, batch_size=batch))

    base = results[0]["articles_per_s"]
    table = Table(title=f"eval throughput — {gguf.name}, {len(articles)} articles, max_new_tokens={max_new}")
    for col in ("run", "articles/s", "× naive", "prompt tok/s", "gen tok/s", "gen tokens", "identical"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in results:
        r["speedup"] = round(r["articles_per_s"] / base, 2)
        table.add_row(r["name"], f"{r['articles_per_s']:.2f}", f"{r['speedup']:.2f}", f"{r['prompt_tokens_per_s']:.0f}",
                      f"{r['generated_tokens_per_s']:.0f}", str(r["generated_tokens"]),
                      f"{r['identical_to_naive']}/{r['articles']}")
    console.print(table)
    write_json(args.out, {"gguf": str(gguf), "trained_model": trained, "articles": len(articles),
                          "max_new_tokens": max_new, "n_threads": threads, "cpus": llm.cpu_count(),
                          "cpu": platform.processor() or platform.machine(),
                          "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2),
                          "runs": results})


if __name__ == "__main__":
    run_main(main)
