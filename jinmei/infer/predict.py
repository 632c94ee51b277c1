"""`jinmei-predict`: one Japanese article in (file or stdin), its persons as JSON on stdout.

Same GGUF, prompt and greedy decoding as eval. An answer that is not valid JSON in the schema, or that
ran into the token limit, is an error (exit 2) with the raw answer on stderr: never passed off as a result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jinmei.infer.engine import Engine, gguf_path
from jinmei.errors import JinmeiError, run_main
from jinmei.config.params import load_all
from jinmei.runtime import set_offline_env
from jinmei.eval.scoring import judge


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="jinmei-predict",
                                 description="Extract the persons of a Japanese news article as JSON.")
    ap.add_argument("file", nargs="?", type=Path, help="a UTF-8 text file with the article (default: stdin)")
    ap.add_argument("--gguf", type=Path, help="the model (default: models/gguf/<quantize.name>-<quantize.type>.gguf)")
    ap.add_argument("--grammar", action=argparse.BooleanOptionalAction, default=None,
                    help="constrain decoding to the answer's JSON schema (default: params eval.grammar)")
    ap.add_argument("--max-new-tokens", type=int, help="default: params eval.max_new_tokens")
    args = ap.parse_args(argv)
    set_offline_env()
    params = load_all()
    ev = params.eval
    fields = list(params.schema.fields)
    if args.file is not None:
        if not args.file.exists():
            raise JinmeiError(f"{args.file}: not found")
        try:
            article = args.file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise JinmeiError(f"{args.file}: not UTF-8 text ({e}); convert it, e.g. `iconv -f SHIFT_JIS -t UTF-8`") from e
    else:
        article = sys.stdin.read()
    article = article.strip()
    if not article:
        raise JinmeiError(f"{args.file or 'stdin'}: empty article; pass a file or pipe the text in")
    grammar = ev.grammar if args.grammar is None else args.grammar
    engine = Engine(args.gguf or gguf_path(params.quantize), n_ctx=ev.n_ctx, n_threads=ev.n_threads,
                    max_new_tokens=args.max_new_tokens or ev.max_new_tokens, batch_size=1,
                    grammar_fields=fields if grammar else None)
    completion = engine.complete(params.prompt.system, [article])[0]
    value, verdict = judge(completion.text, completion.truncated, fields)
    if verdict != "ok":
        print(f"error: the model's answer is {verdict}"
              + (f" (hit {completion.generated_tokens} tokens)" if completion.truncated else "")
              + f": {completion.text!r}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(value, ensure_ascii=False))


def cli() -> None:
    """The `jinmei-predict` console script (pyproject.toml [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
