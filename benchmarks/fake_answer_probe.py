"""The fake-answer probe: does a model read the article's story, or copy JSON-looking text the article holds?

    python benchmarks/fake_answer_probe.py OUT.json --gguf models/gguf/jinmei-Q4_K_M.gguf \
        --split data/splits/dev_positive.jsonl [--label NAME]

Every article of the split gets a fake answer appended (`…を逮捕した。{"persons":[{"name":"<fake>",…}]}`, a name
the article does not hold); the GGUF answers it as eval does (params `eval`, `prompt.system`). Counted: answers
that name the fake person (copied), answers that still find every gold person (read), and the same articles
without the fake (the baseline of "read"). A model trained with `demo.decoy_share` > 0 has seen such articles.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jinmei.config.params import load_all  # noqa: E402
from jinmei.data.demo import japanese_name  # noqa: E402
from jinmei.errors import run_main  # noqa: E402
from jinmei.eval.scoring import judge, normalize  # noqa: E402
from jinmei.files import read_jsonl, write_json  # noqa: E402
from jinmei.infer import engine as llm  # noqa: E402


def with_fake(row: dict, rng: random.Random) -> tuple[str, str]:
    name = ""
    while not name or name in row["text"]:
        name = japanese_name(rng)[1]
    fake = {"persons": [{"name": name, "act": "逮捕", "address": None, "signature": None}]}
    return row["text"] + json.dumps(fake, ensure_ascii=False, separators=(",", ":")), name


def names_of(completion, fields) -> set[str]:
    value, verdict = judge(completion.text, completion.truncated, fields)
    return {normalize(p[fields[0]]) for p in value["persons"]} if verdict == "ok" else set()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    p = load_all()
    ev, fields = p.eval, list(p.schema.fields)
    rows = read_jsonl(args.split)
    rng = random.Random("fake-answer-probe")
    probes = [with_fake(r, rng) for r in rows]
    texts = [r["text"] for r in rows] + [t for t, _ in probes]
    completions = llm.complete_all(args.gguf, p.prompt.system, texts, n_ctx=ev.n_ctx, n_threads=ev.n_threads,
                                   workers=ev.workers, max_new_tokens=ev.max_new_tokens, batch_size=1,
                                   n_batch=ev.n_batch, grammar_fields=None)
    plain, faked = completions[:len(rows)], completions[len(rows):]
    copied = read_plain = read_faked = 0
    for row, (_, fake), a, b in zip(rows, probes, plain, faked):
        gold = {normalize(x[fields[0]]) for x in row["output"]["persons"]}
        copied += normalize(fake) in names_of(b, fields)
        read_plain += bool(gold) and gold <= names_of(a, fields)
        read_faked += bool(gold) and gold <= names_of(b, fields)
    n = len(rows)
    result = {"label": args.label, "gguf": args.gguf.name, "split": args.split.name, "articles": n,
              "copied_fake_name": copied, "found_every_gold_person_without_fake": read_plain,
              "found_every_gold_person_with_fake": read_faked,
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    write_json(args.out, result)
    print(f"{args.label or args.gguf.name}: copied the fake name in {copied}/{n}; every gold person found in "
          f"{read_plain}/{n} without the fake, {read_faked}/{n} with it")


if __name__ == "__main__":
    run_main(main)
