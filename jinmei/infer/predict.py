"""`jinmei-predict`: one Japanese article in (file or stdin), its persons as JSON on stdout; or, with `--jsonl IN`,
one JSON line out per article line in.

Same GGUF, prompt and greedy decoding as eval (for a batch: eval's engine, workers and batching too). An answer that
is not valid JSON in the schema, or that ran into the token limit, is an error (exit 2) with the raw answer on
stderr: never passed off as a result. Whatever the input (any bytes, a directory, an unreadable file, bad flags), a
refusal is one line on stderr and exit 1 (a bad flag: exit 2), never a traceback.
"""
from __future__ import annotations

import argparse
import codecs
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

from jinmei.infer.engine import Engine, gguf_path
from jinmei.errors import JinmeiError, OneLineParser, positive_int, run_main
from jinmei.config.params import load_all
from jinmei.data.corpus import BOM, MAX_LINE_BYTES, has_lone_surrogate
from jinmei.runtime import set_offline_env
from jinmei.eval.scoring import judge, names_not_in
from jinmei.infer import engine as llm

# No article is longer than a corpus line may be (jinmei.data.corpus); stdin is read up to this and no further,
# so an endless stream (`< /dev/urandom`, `yes |`) is refused instead of read until memory runs out.
MAX_ARTICLE_BYTES = MAX_LINE_BYTES
ICONV_HINT = "convert it to UTF-8, e.g. `iconv -f SHIFT_JIS -t UTF-8` (Shift_JIS/cp932) or `nkf -w`"


def decode_article(data: bytes, source: str) -> str:
    """The article text of `data` read from `source` (a path, or "stdin"): strict UTF-8, one leading BOM dropped as
    the corpus reader drops it, surrounding whitespace stripped. A JinmeiError naming the byte otherwise."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text = decoder.decode(data[:MAX_ARTICLE_BYTES], final=False)
    except UnicodeDecodeError as e:
        raise JinmeiError(f"{source}: not UTF-8 text (byte {e.start + 1} is 0x{data[e.start]:02x}); "
                          f"{ICONV_HINT}") from None
    if len(data) > MAX_ARTICLE_BYTES:
        raise JinmeiError(f"{source}: more than {MAX_ARTICLE_BYTES} bytes; jinmei-predict reads one article, "
                          "not a stream: pass one article's text")
    try:
        text += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise JinmeiError(f"{source}: ends in the middle of a UTF-8 character (the last {len(data) - len(text.encode())}"
                          " byte(s)); the text was cut off (e.g. by `head -c`): pass the whole article") from None
    if text.startswith(BOM):
        text = text[len(BOM):]
    return text.strip()


def read_bytes(stream: BinaryIO) -> bytes:
    """At most MAX_ARTICLE_BYTES + 1 bytes (one more than allowed tells an over-long input)."""
    return stream.read(MAX_ARTICLE_BYTES + 1)


def read_article(file: Path | None) -> str:
    """The article of `file`, or of stdin when None; a one-line JinmeiError for whatever cannot be read."""
    if file is None:
        source = "stdin"
        if sys.stdin is None:
            raise JinmeiError("stdin is closed; pipe the article in or pass a file")
        try:
            data = read_bytes(sys.stdin.buffer)
        except OSError as e:
            raise JinmeiError(f"stdin: cannot read it ({e.strerror or e}); pipe the article in or pass a file") from None
    else:
        source = str(file)
        if not file.exists():
            raise JinmeiError(f"{file}: not found")
        if file.is_dir():
            raise JinmeiError(f"{file}: is a directory; pass a UTF-8 text file holding one article")
        try:
            with open(file, "rb") as f:
                data = read_bytes(f)
        except OSError as e:
            raise JinmeiError(f"{file}: cannot read it ({e.strerror or e}); check the file and its permissions") \
                from None
    article = decode_article(data, source)
    if not article:
        raise JinmeiError(f"{source}: empty article; pass a file or pipe the text in")
    return article


def check_gguf(path: Path) -> None:
    """A --gguf that is no GGUF file is refused here, not by llama.cpp's ValueError."""
    if not path.exists():
        raise JinmeiError(f"{path}: GGUF file not found")
    if not path.is_file():
        raise JinmeiError(f"{path}: not a file; --gguf takes the quantized model file (models/gguf/*.gguf)")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise JinmeiError(f"{path}: cannot read it ({e.strerror or e})") from None
    if magic != b"GGUF":
        raise JinmeiError(f"{path}: not a GGUF file (it does not start with 'GGUF'); --gguf takes the quantized "
                          "model file (models/gguf/*.gguf)")


def read_jsonl_articles(path: Path) -> list[tuple[Any, str]]:
    """(id, text) of every line of a batch file: a JSON object with "text" (a corpus line will do; "id" is optional,
    the line number otherwise). The whole file is checked before the model loads; a bad line is named by its number."""
    if not path.exists():
        raise JinmeiError(f"{path}: not found")
    if path.is_dir():
        raise JinmeiError(f"{path}: is a directory; --jsonl takes a file of JSON lines, each with \"text\"")
    articles = []
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                if not raw.strip():
                    continue
                line = decode_article(raw, where)
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise JinmeiError(f"{where}: not JSON ({e.msg}); each line is one JSON object with \"text\"") \
                        from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                    raise JinmeiError(f'{where}: needs "text": a non-empty string (and optionally "id")')
                if has_lone_surrogate(row["text"]):
                    raise JinmeiError(f'{where}: "text" holds a lone surrogate (a \\ud800-\\udfff escape that is '
                                      "half of a character); fix what wrote the file")
                articles.append((row.get("id", lineno), row["text"].removeprefix(BOM).strip()))
    except OSError as e:
        raise JinmeiError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not articles:
        raise JinmeiError(f"{path}: no articles; each line is one JSON object with \"text\"")
    return articles


def answer_row(article_id: Any, article: str, completion: llm.Completion, fields: list[str]) -> dict[str, Any]:
    """One output line: the persons when the answer is valid, else its verdict and the raw answer, never a guess."""
    value, verdict = judge(completion.text, completion.truncated, fields)
    if verdict != "ok":
        return {"id": article_id, "verdict": verdict, "raw": completion.text}
    row = {"id": article_id, "verdict": "ok", **value}
    absent = names_not_in(article, value, fields[0])
    if absent:
        row["names_not_in_article"] = absent
    return row


def predict_batch(params, gguf: Path, path: Path, max_new_tokens: int, grammar: bool) -> None:
    """Eval's decode over a file: worker processes, eval.batch_size, a progress bar on stderr, one JSON line per
    article on stdout in input order. An article too long for eval.n_ctx is a line with verdict too_long, not a
    failed batch. Exit 2 when any answer is not valid (every line is still written)."""
    import llama_cpp
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ev, fields, system = params.eval, list(params.schema.fields), params.prompt.system
    articles = read_jsonl_articles(path)
    # the GGUF's own tokenizer and template measure each prompt (vocabulary only: no weights, no GPU here)
    served = llm.GgufChat(llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False))
    lengths = [len(served.prompt_ids(system, text)) for _, text in articles]
    fits = [i for i, n in enumerate(lengths) if n + max_new_tokens <= ev.n_ctx]
    with Progress(TextColumn("[bold]predict[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=len(fits))
        done = llm.complete_all(gguf, system, [articles[i][1] for i in fits], n_ctx=ev.n_ctx, n_threads=ev.n_threads,
                                workers=ev.workers, max_new_tokens=max_new_tokens, batch_size=ev.batch_size,
                                n_batch=ev.n_batch, grammar_fields=fields if grammar else None,
                                progress=lambda n: bar.advance(task, n))
    completions = dict(zip(fits, done))
    invalid = 0
    for i, (article_id, text) in enumerate(articles):
        if i in completions:
            row = answer_row(article_id, text, completions[i], fields)
        else:
            row = {"id": article_id, "verdict": "too_long", "prompt_tokens": lengths[i]}
        invalid += row["verdict"] != "ok"
        write_stdout(json.dumps(row, ensure_ascii=False) + "\n")
    if invalid:
        print(f"error: {invalid} of {len(articles)} answers are not valid: their lines hold the verdict (and the raw "
              "answer), no persons", file=sys.stderr)
        sys.exit(2)


def write_stdout(line: str) -> None:
    """UTF-8 whatever the locale: a C/ASCII stdout must not turn the answer into a traceback."""
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    if out is None:
        sys.stdout.write(line)
    else:
        sys.stdout.flush()
        out.write(line.encode("utf-8"))
        out.flush()


def main(argv: list[str] | None = None) -> None:
    ap = OneLineParser(prog="jinmei-predict", description="Extract the persons of a Japanese news article as JSON.")
    ap.add_argument("file", nargs="?", type=Path, help="a UTF-8 text file with the article (default: stdin)")
    ap.add_argument("--jsonl", type=Path, metavar="IN",
                    help="a batch: one JSON object with \"text\" (and \"id\") per line; one JSON answer per line out")
    ap.add_argument("--gguf", type=Path, help="the model (default: models/gguf/<quantize.name>-<quantize.type>.gguf)")
    ap.add_argument("--params", type=Path, help="the params.yaml the model was trained with (default: ./params.yaml, "
                                                "or $JINMEI_PARAMS); with --gguf, runs outside the repository")
    ap.add_argument("--grammar", action=argparse.BooleanOptionalAction, default=None,
                    help="constrain decoding to the answer's JSON schema (default: params eval.grammar)")
    ap.add_argument("--max-new-tokens", type=positive_int("tokens"),
                    help="at most this many answer tokens, fewer than eval.n_ctx (default: params eval.max_new_tokens)")
    args = ap.parse_args(argv)
    set_offline_env()
    if args.params is not None and not args.params.is_file():
        raise JinmeiError(f"{args.params}: not found; --params takes the params.yaml the model was trained with")
    if args.jsonl is not None and args.file is not None:
        raise JinmeiError("pass either one article (a file or stdin) or --jsonl IN, not both")
    params = load_all(args.params)
    ev = params.eval
    fields = list(params.schema.fields)
    max_new_tokens = ev.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
    if max_new_tokens >= ev.n_ctx:
        raise JinmeiError(f"--max-new-tokens {max_new_tokens} leaves no room for the article in eval.n_ctx="
                          f"{ev.n_ctx} tokens; use fewer than {ev.n_ctx} (or raise eval.n_ctx in params.yaml)")
    gguf = args.gguf or gguf_path(params.quantize)
    grammar = ev.grammar if args.grammar is None else args.grammar
    if args.jsonl is not None:
        check_gguf(gguf)
        return predict_batch(params, gguf, args.jsonl, max_new_tokens, grammar)
    article = read_article(args.file)
    check_gguf(gguf)
    try:
        engine = Engine(gguf, n_ctx=ev.n_ctx, n_threads=ev.n_threads, max_new_tokens=max_new_tokens, batch_size=1,
                        grammar_fields=fields if grammar else None)
    except ValueError as e:      # llama-cpp-python: "Failed to load model from file", a context it cannot make
        raise JinmeiError(f"{gguf}: llama.cpp could not load it ({e}); rerun `dvc repro quantize` or pass the "
                          "GGUF it wrote with --gguf") from None
    completion = engine.complete(params.prompt.system, [article])[0]
    value, verdict = judge(completion.text, completion.truncated, fields)
    if verdict != "ok":
        print(f"error: the model's answer is {verdict}"
              + (f" (hit {completion.generated_tokens} tokens)" if completion.truncated else "")
              + f": {completion.text!r}", file=sys.stderr)
        sys.exit(2)
    absent = names_not_in(article, value, fields[0])
    if absent:
        print(f"warning: {', '.join(ascii(n)[1:-1] if not n.isprintable() else n for n in absent)} does not occur in "
              "the article: the model did not read it there (JSON-looking text in the article, or made up)",
              file=sys.stderr)
    write_stdout(json.dumps(value, ensure_ascii=False) + "\n")


def cli() -> None:
    """The `jinmei-predict` console script (pyproject.toml [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
