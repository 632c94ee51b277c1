"""Eval throughput of a GGUF under llama.cpp with the project's own engine (jinmei/infer/engine.py), fixed answer lengths.

    python3 bench.py --gguf G --articles A.jsonl --out OUT.json [--batches 1,8,16,32] [--gens 1,7,71] ...

A random-weight model never writes the end-of-turn token where a trained one would, so each run forces the
answer length: a subclass of jinmei.infer.engine.Engine whose is_end() is always False, with max_new_tokens = the
length wanted; everything else (tokenisation, shared system-prompt KV, Llama.generate for batch 1,
multi-sequence llama_batch decode for batch > 1, greedy argmax on every step) is the project's code.
Lengths are sampled tokens per article, the end-of-turn token included: 7 for an empty answer
({"persons":[]} is ~6 tokens + end), 71 for a one-person answer (~70 + end), 1 for prompt processing alone.

For each batch size: one untimed warm-up, then one timed Engine.complete() per answer length over the same
articles. Derived: prompt tok/s = prompt tokens decoded (the shared system prompt excluded) / time at length 1;
generation tok/s = extra tokens / extra time between lengths 1 and 71 (all sequences together); and
per-article seconds at lengths 7 and 71, fitted as t(g) = a + b*g for other lengths. The JSON is rewritten
after every run, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

# llama_cpp BEFORE numpy: on the GPU image (numpy 2.5.2, torch 2.11 venv) importing numpy first makes the
# CUDA build of libllama segfault in init_tokenizer while loading the model (seen 2026-11-25).
import llama_cpp  # noqa: E402,F401  isort: skip

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jinmei.infer import engine as llm  # noqa: E402


class FixedLengthEngine(llm.Engine):
    """jinmei.infer.engine.Engine that never sees an end-of-turn token: every answer is exactly max_new_tokens long."""

    def is_end(self, token: int) -> bool:
        return False


def load_articles(path: Path) -> tuple[str, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    system = json.loads(lines[0])["system"]
    return system, [json.loads(line)["text"] for line in lines[1:] if line]


def gpu_info() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,clocks.max.sm,power.limit,"
                               "driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"nvidia-smi failed: {e}"


def timed_run(eng: FixedLengthEngine, system: str, articles: list[str], gen: int, prefix_len: int) -> dict:
    eng.max_new_tokens = gen
    start = time.perf_counter()
    out = eng.complete(system, articles)
    seconds = time.perf_counter() - start
    assert all(c.generated_tokens == gen and c.truncated for c in out), "an answer did not have the forced length"
    prompt = sum(c.prompt_tokens for c in out)
    return {"batch": eng.batch_size, "gen": gen, "articles": len(out), "seconds": round(seconds, 3),
            "prompt_tokens": prompt, "prompt_tokens_decoded": prompt - prefix_len * len(out),
            "generated_tokens": sum(c.generated_tokens for c in out),
            "s_per_article": round(seconds / len(out), 5), "articles_per_s": round(len(out) / seconds, 2)}


def derive(runs: list[dict]) -> dict:
    by = {r["gen"]: r for r in runs}
    d: dict = {"batch": runs[0]["batch"]}
    if 1 in by:
        d["prompt_tok_s"] = round(by[1]["prompt_tokens_decoded"] / by[1]["seconds"], 1)
    gens = sorted(by)
    if len(gens) >= 2:
        lo, hi = by[gens[0]], by[gens[-1]]
        extra_tokens = hi["generated_tokens"] - lo["generated_tokens"]
        d["gen_tok_s"] = round(extra_tokens / (hi["seconds"] - lo["seconds"]), 1)
        # per-article time t(g) = a + b*g, through the two lengths closest to real answers (7 and 71 if run)
        g1, g2 = (7, 71) if 7 in by and 71 in by else (gens[0], gens[-1])
        t1, t2 = by[g1]["s_per_article"], by[g2]["s_per_article"]
        b = (t2 - t1) / (g2 - g1)
        d["fit"] = {"a_s": round(t1 - b * g1, 5), "b_s_per_token": round(b, 6), "through": [g1, g2]}
    for g in gens:
        d[f"s_per_article_gen{g}"] = by[g]["s_per_article"]
        d[f"articles_per_s_gen{g}"] = by[g]["articles_per_s"]
    return d


def estimate(d: dict, load_s: float, n_empty: int = 4500, n_pos: int = 2500, gen_empty: int = 7,
             gen_pos: int = 71) -> dict:
    """Dev-All 5,000 (90% empty) + Dev-Positive 2,000: 4,500 empty answers + 2,500 positive ones."""
    a, b = d["fit"]["a_s"], d["fit"]["b_s_per_token"]
    t = lambda g: a + b * g  # noqa: E731
    seconds = n_empty * t(gen_empty) + n_pos * t(gen_pos) + 2 * load_s
    return {"batch": d["batch"], "minutes": round(seconds / 60, 2),
            "minutes_if_positive_answers_140_tokens": round((seconds + n_pos * b * (141 - gen_pos)) / 60, 2)}


def micro(eng: FixedLengthEngine, n_threads: int, out: dict) -> None:
    """llama-bench-like numbers on the same model: prompt decode at two micro-batch sizes, 1-sequence decode."""
    lib = eng.lib
    import random

    rng = random.Random(0)
    res = {}
    for ubatch in (512, 2048):
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = 4096, ubatch, ubatch
        params.n_threads = params.n_threads_batch = n_threads
        ctx = lib.llama_init_from_model(eng.llm._model.model, params)
        batch = lib.llama_batch_init(ubatch, 0, 1)
        mem = lib.llama_get_memory(ctx)

        def decode(tokens, pos0, logits_last=True):
            batch.n_tokens = len(tokens)
            for j, t in enumerate(tokens):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, pos0 + j, 1
                batch.seq_id[j][0] = 0
                batch.logits[j] = logits_last and j == len(tokens) - 1
            assert lib.llama_decode(ctx, batch) == 0

        toks = [rng.randrange(1000, 49000) for _ in range(4096)]
        for rep in range(2):             # rep 0 = warm-up
            lib.llama_memory_clear(mem, True)
            lib.llama_synchronize(ctx)
            start = time.perf_counter()
            for s in range(0, 4096 - 256, ubatch):
                decode(toks[s: s + ubatch][: 4096 - 256 - s], s)
            lib.llama_synchronize(ctx)
            pp = (4096 - 256) / (time.perf_counter() - start)
        res[f"pp_ubatch{ubatch}_tok_s"] = round(pp, 1)
        if ubatch == 512:                # 1-sequence generation after an 800-token prompt
            lib.llama_memory_clear(mem, True)
            decode(toks[:512], 0)
            decode(toks[512:800], 512)
            for rep in range(2):
                start = time.perf_counter()
                for k in range(128):
                    decode([toks[800 + k]], 800 + k)
                    lib.llama_get_logits_ith(ctx, 0)
                lib.llama_synchronize(ctx)
                tg = 128 / (time.perf_counter() - start)
                lib.llama_memory_seq_rm(mem, 0, 800, -1)
            res["tg_1seq_after_800_tok_s"] = round(tg, 1)
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)
    out["micro"] = res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--articles", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--gens", default="1,7,71")
    ap.add_argument("--n-bs1", type=int, default=48, help="articles per timed run at batch 1")
    ap.add_argument("--n-batched", type=int, default=128, help="articles per timed run at batch > 1")
    ap.add_argument("--long-articles", type=Path, help="also: longer articles at --long-batches")
    ap.add_argument("--long-batches", default="16")
    ap.add_argument("--n-ctx", type=int, default=8192, help="eval.n_ctx of profiles/production.yaml")
    ap.add_argument("--n-threads", type=int, default=2, help="eval.n_threads of profiles/production.yaml")
    ap.add_argument("--max-new-tokens-ctx", type=int, default=256,
                    help="eval.max_new_tokens: sizes the batched context as eval would")
    ap.add_argument("--n-batch", type=int, default=512, help="eval.n_batch: tokens per llama_decode when batched")
    ap.add_argument("--no-micro", action="store_true")
    args = ap.parse_args()


    system, articles = load_articles(args.articles)
    out: dict = {"gguf": str(args.gguf), "gguf_bytes": args.gguf.stat().st_size, "articles_file": str(args.articles),
                 "gpu": gpu_info(), "python": platform.python_version(),
                 "llama_cpp_python": llama_cpp.__version__,
                 "gpu_offload_supported": bool(llama_cpp.llama_supports_gpu_offload()),
                 "n_ctx": args.n_ctx, "n_threads": args.n_threads, "n_batch": args.n_batch, "runs": [], "derived": [], "estimate": []}

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False))

    start = time.perf_counter()
    eng = FixedLengthEngine(args.gguf, n_ctx=args.n_ctx, n_threads=args.n_threads, max_new_tokens=1, batch_size=1,
                            n_batch=args.n_batch)
    out["load_s"] = load_s = round(time.perf_counter() - start, 2)
    out["gpu_after_load"] = gpu_info()       # memory.used shows the weights on the GPU (n_gpu_layers=-1)
    lens = [len(eng.tokenize(system, a)) for a in articles]
    prefix_len = len(llm.common_prefix([eng.tokenize(system, a) for a in articles[:8]]))
    out["prompt_tokens"] = {"n": len(lens), "min": min(lens), "mean": round(sum(lens) / len(lens), 1),
                            "max": max(lens), "shared_prefix": prefix_len}
    print(f"loaded {args.gguf.name} in {load_s} s; {out['gpu']}; offload {out['gpu_offload_supported']}; "
          f"prompts {out['prompt_tokens']}", flush=True)
    print(f"after load: {out['gpu_after_load']}", flush=True)
    save()
    if not args.no_micro:
        micro(eng, args.n_threads, out)
        print("micro:", out["micro"], flush=True)
        save()

    gens = [int(g) for g in args.gens.split(",")]

    def sweep(batches: list[int], arts: list[str], label: str):
        for b in batches:
            eng.batch_size = b
            eng._close_context()
            n = args.n_bs1 if b == 1 else args.n_batched
            sub = arts[:n]
            longest = max(len(eng.tokenize(system, a)) for a in arts)
            if b > 1:   # the context eval would open (eval.max_new_tokens answer room), kept for every length
                eng._open_context(min(args.n_ctx, -(-(longest + args.max_new_tokens_ctx) // 256) * 256))
            eng.max_new_tokens = 7
            eng.complete(system, arts[-max(b, 4):])           # warm-up (also fills the shared prefix)
            runs = []
            for g in gens:
                r = timed_run(eng, system, sub, g, prefix_len)
                r["set"] = label
                runs.append(r)
                out["runs"].append(r)
                print(f"[{label}] batch {b:2d} gen {g:3d}: {r['articles']} articles in {r['seconds']:.2f} s = "
                      f"{r['s_per_article'] * 1000:.1f} ms/article, {r['articles_per_s']:.1f} articles/s", flush=True)
                save()
            d = derive(runs)
            d["set"] = label
            out["derived"].append(d)
            print(f"[{label}] batch {b:2d}: {json.dumps(d)}", flush=True)
            if label == "main":
                e = estimate(d, load_s)
                out["estimate"].append(e)
                print(f"[{label}] batch {b:2d}: 7,000-article estimate {e['minutes']} min "
                      f"({e['minutes_if_positive_answers_140_tokens']} min if positive answers were 140 tokens)",
                      flush=True)
            save()

    sweep([int(b) for b in args.batches.split(",")], articles, "main")
    if args.long_articles:
        lsys, larts = load_articles(args.long_articles)
        assert lsys == system
        llens = [len(eng.tokenize(system, a)) for a in larts]
        out["long_prompt_tokens"] = {"n": len(llens), "min": min(llens), "mean": round(sum(llens) / len(llens), 1),
                                     "max": max(llens)}
        sweep([int(b) for b in args.long_batches.split(",")], larts, "long")
    out["gpu_after"] = gpu_info()
    save()
    print("done", flush=True)


if __name__ == "__main__":
    main()
