"""Build the benchmark's articles from the project's own split files (runs locally, before the GPU call).

    python benchmarks/gpu_eval/make_articles.py OUT.jsonl [--n 160] [--min-tokens 600] [--max-tokens 1000]

The demo corpus articles are 40-160 characters, far shorter than real news, so each benchmark article is
several whole demo articles joined with a newline (disjoint groups: no two articles share a prefix, so only
the system prompt is shared, as in a real eval), cut at a character boundary so that the article's own tokens
(SmolLM2's tokenizer, the one embedded in the benchmark GGUF) hit a target drawn uniformly in
[min-tokens, max-tokens]. Also writes the system prompt of profiles/production.yaml into each row.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jinmei.template import chat  # noqa: E402
from jinmei.train.examples import chat_format_of  # noqa: E402

SOURCES = ["data/splits/dev_all.jsonl", "data/splits/train_empty.jsonl", "data/splits/train_positive.jsonl",
           "data/splits/dev_positive.jsonl"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--min-tokens", type=int, default=600)
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--tokenizer", default=str(ROOT / "models/base"))
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    system = yaml.safe_load((ROOT / "profiles/production.yaml").read_text())["prompt"]["system"]
    texts = [json.loads(line)["text"] for src in SOURCES for line in (ROOT / src).read_text().splitlines() if line]
    rng = random.Random(args.seed)
    rng.shuffle(texts)
    n_tok = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    rows, pos = [], 0
    for i in range(args.n):
        target = rng.randint(args.min_tokens, args.max_tokens)
        parts: list[str] = []
        while n_tok("\n".join(parts)) < target:
            if pos >= len(texts):
                raise SystemExit(f"ran out of source texts after {i} articles")
            parts.append(texts[pos])
            pos += 1
        article = "\n".join(parts)
        lo, hi = 1, len(article)           # shortest prefix with >= target tokens
        while lo < hi:
            mid = (lo + hi) // 2
            if n_tok(article[:mid]) >= target:
                hi = mid
            else:
                lo = mid + 1
        article = article[:lo]
        prompt_tokens = len(chat.prompt_ids(tok, chat_format_of(tok), system, article))
        rows.append({"id": f"bench-{i:04d}", "text": article, "chars": len(article),
                     "article_tokens": n_tok(article), "prompt_tokens": prompt_tokens})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"system": system}, ensure_ascii=False) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    toks = [r["article_tokens"] for r in rows]
    chars = [r["chars"] for r in rows]
    print(f"{len(rows)} articles: {min(toks)}-{max(toks)} article tokens (mean {sum(toks) / len(toks):.0f}), "
          f"{min(chars)}-{max(chars)} chars (mean {sum(chars) / len(chars):.0f}), "
          f"{sum(toks) / sum(chars):.2f} tokens/char; system+template adds "
          f"{rows[0]['prompt_tokens'] - rows[0]['article_tokens']} tokens; used {pos} demo texts")


if __name__ == "__main__":
    main()
