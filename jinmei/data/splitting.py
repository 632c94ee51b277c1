"""Validate the raw corpus, then cut deterministic, disjoint evaluation and training files.

Order is a seeded hash of each article's normalised text: it depends on neither the ids nor the order
of lines in the corpus, so the same articles give the same split. Articles whose texts are equal after
NFKC normalisation and whitespace removal count as one (later ones dropped), so no article can sit in
an evaluation file and, reworded by a space, in a training file.

Length is settled here, before any training: every dev article's prompt is measured with the base tokenizer and
chat template exactly as eval renders it, and its gold answer against eval.max_new_tokens; `split.too_long`
decides what happens to one that does not fit (EvalBudget, fit_dev).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any

from jinmei.data.corpus import LONG_TEXT_CHARS, load_corpus, visible
from jinmei.data.names import TRAINING_SPLITS, name_index
from jinmei.errors import JinmeiError, show_id
from jinmei.files import atomic_path, write_json, write_jsonl
from jinmei.template import chat
from jinmei.template.prompt import answer_text

FILES = ("dev_all", "dev_positive", "sanity", "train_positive", "train_empty")
WHITESPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The form in which two texts count as the same article."""
    return WHITESPACE.sub("", unicodedata.normalize("NFKC", text))


def seeded_order(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: hashlib.sha256(f"{seed}\n{normalise(r['text'])}".encode()).hexdigest())


def drop_near_duplicates(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, list[tuple[str, str]]]:
    """(kept, number dropped, [(dropped id, kept id)] for the dropped ones whose label differs: conflicts)."""
    seen: dict[str, dict[str, Any]] = {}
    kept, conflicts = [], []
    for record in records:
        key = normalise(record["text"])
        first = seen.get(key)
        if first is None:
            seen[key] = record
            kept.append(record)
        elif first["output"] != record["output"]:
            conflicts.append((record["id"], first["id"]))
    return kept, len(records) - len(kept), conflicts


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
                raise JinmeiError(f"internal: article {show_id(record['id'])} is in both {owner[key]} and {name}")
            owner[key] = name


def split_metrics(report: dict[str, Any], near_dropped: int, splits: dict[str, list[dict[str, Any]]],
                  near_conflicts: int = 0) -> dict:
    metrics: dict[str, Any] = {
        "corpus_lines": report["lines"],
        "records_accepted": report["accepted"],
        "records_rejected": 0,  # any bad line stops the stage: nothing is silently skipped
        "blank_lines": report["blank_lines"],
        "bom_lines": int(report["bom"]),
        "crlf_lines": report["crlf_lines"],
        "no_final_newline": int(report["no_final_newline"]),
        "duplicates_exact_dropped": report["duplicate_texts_dropped"],
        "duplicates_conflicting_labels": report["duplicate_texts_conflicting"] + near_conflicts,
        "duplicates_near_dropped": near_dropped,
        "duplicates_near_conflicting": near_conflicts,
        "texts_with_control_chars": len(report["control_char_ids"]),
        "texts_very_long": len(report["very_long_ids"]),
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


def where(article_id: str, line_of: dict[str, int]) -> str:
    """`line 17 id 'a-17'`: how every message names an article (the id escaped, on one line)."""
    line = line_of.get(article_id)
    return (f"line {line} " if line else "") + f"id {show_id(article_id)}"


def named(ids: list[str], line_of: dict[str, int], limit: int = 3) -> str:
    """The first `limit` articles, each with its line, and how many more."""
    shown = ", ".join(where(i, line_of) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


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


def apply_policy(records: list[dict[str, Any]], found: dict[str, list[str]], split, corpus: Path,
                 line_of: dict[str, int] | None = None) -> tuple[list, dict]:
    """warn: count and keep; error: stop naming the first ids; drop: leave those articles out (counted)."""
    line_of = line_of or {}
    report, drop = {}, set()
    for kind, ids in found.items():
        policy = getattr(split, f"on_{kind}")
        report[kind] = {"count": len(ids), "examples": ids[:EXAMPLES], "policy": policy}
        if ids and policy == "error":
            what = {"special_tokens": "contain special-token strings of the base model's tokenizer (they stay text: "
                                      "jinmei tokenizes articles with special-token parsing off)",
                    "name_not_in_text": "have a person whose name does not occur in the article text"}[kind]
            raise JinmeiError(f"{corpus}: {len(ids)} article(s) {what}, e.g. {named(ids, line_of, EXAMPLES)}; fix "
                              f"the corpus, or set split.on_{kind}: warn (keep them) or drop (leave them out)")
        if ids and policy == "drop":
            drop |= set(ids)
        if ids and policy == "warn":
            print(f"split: warning: {len(ids)} article(s) with {kind.replace('_', ' ')} in {corpus}, e.g. "
                  f"{named(ids, line_of)} (kept; split.on_{kind}: error or drop to change that)")
    kept = [r for r in records if r["id"] not in drop]
    report["dropped"] = len(records) - len(kept)
    return kept, report


def counted(report: dict[str, Any], near_conflicts: list[tuple[str, str]], corpus: Path) -> dict[str, Any]:
    """What the corpus let through that later stages would not flag: counted, the first ids named, one warning
    line each (ids escaped: an id cannot move the cursor or fake a line of output)."""
    line_of = report["line_of"]
    found = {
        "control_chars": (report["control_char_ids"], "with control characters (NUL, ESC, BEL, CR, U+2028, bidi "
                          "overrides ...) in the text; they reach the model as they are"),
        "very_long_texts": (report["very_long_ids"], f"longer than {LONG_TEXT_CHARS:,} characters, more than any news "
                            "article (a whole page or a concatenation?)"),
        "conflicting_labels": (report["conflicting_ids"] + [d for d, _ in near_conflicts],
                               "dropped as duplicates of an earlier text (exactly or after NFKC and whitespace "
                               "removal) whose label differs; the first copy's label is kept: check which is right"),
    }
    out = {}
    for kind, (ids, what) in found.items():
        out[kind] = {"count": len(ids), "examples": ids[:EXAMPLES], "policy": "count"}
        if ids:
            print(f"split: warning: {len(ids)} article(s) in {corpus} {what}: {named(ids, line_of)}")
    return out


class EvalBudget:
    """An article as eval will see it: prompt tokens (the base tokenizer and chat template, rendered and tokenized
    as jinmei.template.chat does for training and jinmei.infer.engine for the GGUF) and answer tokens (the gold
    answer_text), against eval.n_ctx and eval.max_new_tokens.

    Eval decodes an article only if prompt + eval.max_new_tokens <= eval.n_ctx (jinmei.infer.engine), and an answer
    is complete only if its tokens and the end-of-turn token fit in eval.max_new_tokens."""

    def __init__(self, tokenizer, system: str, fields: list[str], n_ctx: int, max_new_tokens: int):
        self.tokenizer, self.system, self.fields = tokenizer, system, list(fields)
        self.n_ctx, self.max_new_tokens = n_ctx, max_new_tokens
        self.fmt = chat.chat_format(tokenizer)
        self._measured: dict[str, tuple[int, int]] = {}

    @property
    def prompt_budget(self) -> int:
        return self.n_ctx - self.max_new_tokens

    @property
    def answer_budget(self) -> int:
        return self.max_new_tokens - 1      # the end-of-turn token is generated too

    def prompt_tokens(self, text: str) -> int:
        return len(chat.prompt_ids(self.tokenizer, self.fmt, self.system, text))

    def answer_tokens(self, output: dict[str, Any]) -> int:
        return len(chat.hf_ids(self.tokenizer, [(answer_text(output, self.fields), False)]))

    def measure(self, record: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, answer tokens) of an article, measured once per id."""
        if record["id"] not in self._measured:
            self._measured[record["id"]] = (self.prompt_tokens(record["text"]), self.answer_tokens(record["output"]))
        return self._measured[record["id"]]

    def fits(self, record: dict[str, Any]) -> bool:
        prompt, answer = self.measure(record)
        return prompt <= self.prompt_budget and answer <= self.answer_budget

    def cut(self, record: dict[str, Any]) -> tuple[str | None, str]:
        """(the longest prefix of the text whose prompt fits, ""), or (None, why not): the answer alone is too long,
        or the prefix that fits would lose a gold label (a name, act, address ... that occurs in the text must still
        occur in it, so no label becomes unextractable), or nothing fits. Prefers to end at a sentence end."""
        text = record["text"]
        if self.measure(record)[1] > self.answer_budget:
            return None, "answer"
        need = label_end(text, record["output"]["persons"], self.fields)

        def fits(n: int) -> bool:
            return self.prompt_tokens(text[:n]) <= self.prompt_budget

        if not fits(need):
            return None, "label" if need else "prompt"
        lo, hi = need, len(text)            # fits(lo); the whole text does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        end = lo
        stop = max(need, end * 4 // 5)     # a sentence end in the last fifth of what fits
        sentence = max(text.rfind(c, stop, end) for c in SENTENCE_ENDS)
        if sentence >= 0 and fits(sentence + 1):
            end = sentence + 1
        kept = text[:end]
        if not visible(kept):
            return None, "label" if need else "prompt"
        return kept, ""


SENTENCE_ENDS = ("。", "！", "？", "!", "?", "\n", ". ")
WHY_DROPPED = {"answer": "its gold answer alone exceeds eval.max_new_tokens",
               "label": "a prefix that fits would cut away a gold label",
               "prompt": "not even a few characters fit", "policy": "split.too_long: drop"}


def label_end(text: str, persons: list[dict[str, Any]], fields: list[str]) -> int:
    """Length of the shortest prefix of `text` that still holds every gold field value the whole text holds
    (verbatim, or after NFKC and whitespace removal); values absent from the text are not extractable anyway
    (split.on_name_not_in_text)."""
    end, whole = 0, None
    for person in persons:
        for field in fields:
            value = person.get(field)
            if not value:
                continue
            at = text.find(value)
            if at >= 0:
                end = max(end, at + len(value))
                continue
            key = normalise(value)
            whole = normalise(text) if whole is None else whole
            if not key or key not in whole:
                continue
            lo, hi = 0, len(text)           # normalise(text[:hi]) holds it
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if key in normalise(text[:mid]) else (mid, hi)
            end = max(end, hi)
    return end


def fit_dev(records: list[dict[str, Any]], split, seed: int, budget: EvalBudget, corpus: Path,
            line_of: dict[str, int]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Cut the splits so that every dev article fits eval's budget, by split.too_long:
    refuse: stop, naming every article that does not fit, its line, its lengths and the params that would fit it;
    cut: shorten the article text (never the answer) to the longest prefix that fits and keeps every gold label;
         an article that cannot be cut so (its answer alone is too long, or a label would be cut away) is dropped;
    drop: leave the article out of the split;
    keep: keep it; eval scores it as a failure (verdict truncated) and counts it.
    A dropped article leaves the corpus, and the split is cut again: dev sets keep their sizes.
    """
    policy = split.too_long
    dropped: list[tuple[dict[str, Any], str]] = []
    cuts: dict[str, tuple[str | None, str]] = {}
    while True:
        try:
            splits = cut(records, split, seed)
        except JinmeiError as e:
            if not dropped:
                raise
            raise JinmeiError(f"{e} (split.too_long: {policy} left out {len(dropped)} dev article(s) too long for "
                              "eval: raise eval.n_ctx / eval.max_new_tokens, or set split.too_long: keep)") from None
        dev = splits["dev_all"] + splits["dev_positive"]
        over = [r for r in dev if not budget.fits(r)]
        if not over or policy in ("refuse", "keep"):
            break
        leave = []
        for r in over:
            if policy == "drop":
                leave.append((r, "policy"))
                continue
            if r["id"] not in cuts:
                cuts[r["id"]] = budget.cut(r)
            if cuts[r["id"]][0] is None:
                leave.append((r, cuts[r["id"]][1]))
        if not leave:
            break
        gone = {r["id"] for r, _ in leave}
        records = [r for r in records if r["id"] not in gone]
        dropped += leave

    prompts = [budget.measure(r)[0] for r in dev]
    answers = [budget.measure(r)[1] for r in dev]
    need_new = max([budget.max_new_tokens] + [a + 1 for a in answers])
    need_ctx = max([budget.n_ctx] + [p + need_new for p in prompts])
    fix = " and ".join([f"eval.n_ctx >= {need_ctx}"] * (need_ctx > budget.n_ctx)
                       + [f"eval.max_new_tokens >= {need_new}"] * (need_new > budget.max_new_tokens))

    def why(r: dict[str, Any]) -> str:
        prompt, answer = budget.measure(r)
        parts = []
        if prompt > budget.prompt_budget:
            parts.append(f"{prompt} prompt tokens (of {budget.prompt_budget} = eval.n_ctx {budget.n_ctx} - "
                         f"eval.max_new_tokens {budget.max_new_tokens}), {len(r['text'])} characters")
        if answer > budget.answer_budget:
            parts.append(f"a {answer}-token gold answer (eval.max_new_tokens={budget.max_new_tokens} holds "
                         f"{budget.answer_budget} + the end-of-turn token)")
        return f"{where(r['id'], line_of)}: " + " and ".join(parts)

    def listed(rows: list[dict[str, Any]], limit: int = EXAMPLES) -> str:
        shown = "; ".join(why(r) for r in rows[:limit])
        return shown + (f"; and {len(rows) - limit} more" if len(rows) > limit else "")

    if over and policy == "refuse":
        raise JinmeiError(
            f"{corpus}: {len(over)} dev article(s) do not fit eval's budget, eval would fail them after training: "
            f"{listed(over)}. Set {fix} in params.yaml, or choose split.too_long: cut (shorten the text), drop "
            "(leave them out) or keep (eval scores them as failures)")
    done, shortened = [], {r["id"] for r in over} if policy == "cut" else set()
    if shortened:
        for name in ("dev_all", "dev_positive"):
            splits[name] = [dict(r, text=cuts[r["id"]][0]) if r["id"] in shortened else r for r in splits[name]]
        done.append(f"cut {len(over)} dev article(s) to fit eval.n_ctx={budget.n_ctx} (the answer never), e.g. "
                    + ", ".join(f"{where(r['id'], line_of)} {len(r['text'])} -> {len(cuts[r['id']][0])} characters"
                                for r in over[:3]))
    if dropped:
        done.append(f"left out {len(dropped)} dev article(s) that do not fit: "
                    + "; ".join(f"{why(r)} ({WHY_DROPPED[reason]})" for r, reason in dropped[:3])
                    + (f"; and {len(dropped) - 3} more" if len(dropped) > 3 else ""))
    if policy == "keep" and over:
        done.append(f"kept {len(over)} dev article(s) that do not fit (eval scores them as failures): "
                    f"{listed(over, 3)}; to fit them set {fix}")
    if done:
        print(f"split: warning: split.too_long: {policy}: {corpus}: " + "; ".join(done))
    final = [budget.prompt_tokens(cuts[r["id"]][0]) if r["id"] in shortened else budget.measure(r)[0] for r in dev]
    reasons = {k: sum(1 for _, why_ in dropped if why_ == k) for k in WHY_DROPPED}
    report = {
        "count": len(over) + len(dropped), "policy": policy,
        "examples": [r["id"] for r in over[:EXAMPLES]] + [r["id"] for r, _ in dropped[:EXAMPLES]],
        "n_ctx": budget.n_ctx, "max_new_tokens": budget.max_new_tokens,
        "prompt_budget": budget.prompt_budget, "answer_budget": budget.answer_budget, "dev_articles": len(dev),
        "prompt_tokens_max": max(final, default=0), "answer_tokens_max": max(answers, default=0),
        "cut": len(shortened), "dropped": len(dropped), "dropped_because": {k: v for k, v in reasons.items() if v},
        "kept": len(over) if policy == "keep" else 0,
    }
    return splits, report


def novelty(splits: dict[str, list[dict[str, Any]]], key: str) -> dict[str, int]:
    """How many Dev-Positive persons have a name no training article holds (eval scores them apart: found by reading,
    not by remembering)."""
    seen = name_index(r["text"] for name in TRAINING_SPLITS for r in splits[name])
    names = [p.get(key) for r in splits["dev_positive"] for p in r["output"]["persons"]]
    return {"dev_positive_persons": len(names), "dev_positive_persons_unseen": sum(1 for n in names if not seen(n))}


def run(corpus: Path, fields: list[str], split, seed: int, out_dir: Path, metrics_file: Path,
        specials: list[str] = (), budget: EvalBudget | None = None) -> None:
    """Check the corpus, cut the splits (every dev article measured against eval's budget), then write them (the
    folder swapped in whole) and the report."""
    if budget is None:
        raise JinmeiError("internal: the split needs eval's budget (EvalBudget) to measure the dev articles")
    records, report = load_corpus(corpus, list(fields))
    line_of = report["line_of"]
    records, odd = apply_policy(records, oddities(records, list(fields), list(specials)), split, corpus, line_of)
    records, near_dropped, near_conflicts = drop_near_duplicates(records)
    splits, too_long = fit_dev(records, split, seed, budget, corpus, line_of)
    check_disjoint(splits)
    metrics = split_metrics(report, near_dropped, splits, len(near_conflicts))
    metrics.update(dev_too_long=too_long["count"],
                   dev_too_long_cut=too_long["cut"], dev_too_long_dropped=too_long["dropped"],
                   dev_too_long_kept=too_long["kept"], dev_prompt_tokens_max=too_long["prompt_tokens_max"],
                   dev_answer_tokens_max=too_long["answer_tokens_max"])
    metrics["oddities"] = {**odd, **counted(report, near_conflicts, corpus), "too_long": too_long}
    metrics.update(novelty(splits, fields[0]))
    # Everything is checked: only now touch the outputs.
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in FILES:
            write_jsonl(tmp / f"{name}.jsonl", splits[name])
    write_json(metrics_file, metrics)
    print("split: " + ", ".join(f"{name} {metrics[name + '_count']}" for name in FILES)
          + f" (dropped {report['duplicate_texts_dropped']} exact, {near_dropped} near duplicates)")
