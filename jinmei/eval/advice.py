"""What to try next, from eval's metrics and the recipe's rules, as `dvc exp run -S ...` commands.

Rules, in the order they are checked (docs/metrics.md explains the metrics they read):
0. levels, whatever the drops: Dev-Positive recall or person F1 below eval.min_recall / eval.min_person_f1, or
   (nearly) every answer empty (answered_empty_rate >= eval.max_answered_empty_rate on Dev-Positive): flagged,
   with the next steps for the stage the compare subset blames (stage1, stage2 or quantization).
1. stage2 lost recall: stage1 recall - merged recall > eval.recall_drop_margin on the compare subset
   → fewer stage2 steps (stage2.epochs / 2), then stage2.lr / 2, then stage2.positive_ratio + 0.05.
2. stage1 overfits: dev_positive recall fell since the previous eval by more than recall_drop_margin
   while stage1's training loss was still falling at its end → stage1.lora_dropout=0.05.
3. quantization lost recall: merged recall - GGUF recall > eval.quant_drop_margin → a larger quant type.
4. too many false positives on empty articles (> eval.max_false_positive_rate).
5. too few valid answers (schema_valid_rate < eval.min_parse_rate), truncated answers.
A drop (rules 1 and 3) is called a drop only when it is measured: McNemar's exact test on the compare subset's
articles (p < 0.05), or, for metrics without the paired counts, 95% Wilson intervals that do not overlap; a larger
fall that is not measured is reported as such, with the command that compares more articles.
Nothing fired → say that all checks pass.
Every threshold lives in params.yaml `eval`; every suggested value is computed from the current params.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jinmei.errors import JinmeiError, run_main
from jinmei.files import atomic_path

QUANT_LADDER = ["Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"]
BIGGER_QUANTS = ["Q5_K_M", "Q8_0"]


def num(x: float) -> str:
    """A params value as Hydra reads it back: 0.25, 5e-05, 0.15."""
    return f"{round(x, 6):g}"


def cmd(*overrides: str) -> str:
    return "dvc exp run " + " ".join(f"-S {o}" for o in overrides)


def read_optional_json(path: Path | str | None) -> dict[str, Any] | None:
    if path is None or not Path(path).exists():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _drop(metrics, before: str, after: str, margin: float) -> str | None:
    """'drop' (over the margin and measured), 'unclear' (over the margin, not measured) or None. Measured = the
    paired test on the same articles (McNemar p < 0.05) where eval wrote it, else Wilson intervals apart."""
    r1, r2 = _get(metrics, "compare", before, "recall"), _get(metrics, "compare", after, "recall")
    if r1 is None or r2 is None or r1 - r2 <= margin:
        return None
    pair = _get(metrics, "compare", "paired", f"{before}_{after}")
    if pair is not None:
        return "drop" if pair["p"] < 0.05 else "unclear"
    c1, c2 = _get(metrics, "compare", before, "recall_ci95"), _get(metrics, "compare", after, "recall_ci95")
    return "drop" if not (c1 and c2) or c2[1] < c1[0] else "unclear"


def _not_measured(metrics, before: str, after: str) -> str:
    """Why a fall is not called a drop: the paired counts, or the overlapping intervals of older metrics."""
    pair = _get(metrics, "compare", "paired", f"{before}_{after}")
    if pair is None:
        return "the intervals overlap"
    return (f"{pair['lost']} article(s) found only before, {pair['gained']} only after, McNemar exact p = "
            f"{pair['p']:.2g}: not distinguishable at the 5% level")


def _more_articles(metrics) -> str:
    """The command that compares more articles: a larger eval.compare_subset while Dev-Positive has more, else a
    larger Dev-Positive (split.dev_positive_size) compared whole."""
    n, dev = metrics["compare"]["n"], _get(metrics, "dev_positive", "n")
    if dev is None or n * 4 <= dev:
        return f"raise eval.compare_subset: `{cmd('eval.compare_subset=' + str(4 * n))}`"
    if n < dev:
        return f"compare all of Dev-Positive: `{cmd('eval.compare_subset=' + str(dev))}`"
    return ("Dev-Positive is compared whole; a larger one tells, if the corpus has the positives: "
            f"`{cmd('split.dev_positive_size=' + str(4 * dev), 'eval.compare_subset=' + str(4 * dev))}`")


def _ci(ci: list[float] | None) -> str:
    return f" [95% CI {_pct(ci[0])}-{_pct(ci[1])}]" if ci else ""


def _interval(metrics, name: str) -> str:
    return _ci(_get(metrics, "compare", name, "recall_ci95"))


def stage2_ladder(s2) -> str:
    """The recipe's three repairs for recall lost in stage2, in its order. With stage2.size null the mix keeps every
    positive, so a larger share drops empties and the same epochs become fewer steps: the third step says so."""
    shrinks = (" (stage2.size is null: the mix shrinks to keep that share, so stage2 also runs fewer steps)"
               if s2.size is None else "")
    steps = [("fewer stage2 steps", "stage2.epochs", num(s2.epochs / 2)),
             ("a lower stage2 learning rate", "stage2.lr", num(s2.lr / 2)),
             ("more positives in stage2", "stage2.positive_ratio", num(s2.positive_ratio + 0.05))]
    lines = [f"   {i}. {what}: `{cmd(f'{key}={value}')}`" for i, (what, key, value) in enumerate(steps, 1)]
    return "\n".join(lines) + shrinks + "\n" + queued_sweep([(key, value) for _, key, value in steps])


def queued_sweep(overrides: list[tuple[str, str]]) -> str:
    """The same variants as one queued sweep (each a named experiment that reruns only the stages it changes), and
    the `jinmei-compare` line that tests each against this run on the same dev articles."""
    names = [f"{key.replace('.', '-').replace('_', '-')}-{value}" for key, value in overrides]
    queue = [f"   dvc exp run --queue -n {name} -S {key}={value}" for name, (key, value) in zip(names, overrides)]
    return ("   Or all of them at once, then each against this run (paired, on the same dev articles):\n\n"
            + "\n".join(["   ```bash", *queue, "   dvc queue start && dvc queue status   # dvc queue logs <name>",
                          f"   jinmei-compare workspace {' '.join(names)}", "   ```"]))


def low_levels(metrics: dict[str, Any], params) -> list[str]:
    """Which headline levels are below the floors in params (the eval table marks them)."""
    ev, pos = params.eval, metrics.get("dev_positive", {})
    low = []
    if pos.get("recall") is not None and pos["recall"] < ev.min_recall:
        low.append("recall")
    if pos.get("person_f1") is None or pos["person_f1"] < ev.min_person_f1:
        low.append("person_f1")
    if pos.get("answered_empty_rate") is not None and pos["answered_empty_rate"] >= ev.max_answered_empty_rate:
        low.append("answered_empty_rate")
    return low


def _level_finding(metrics: dict[str, Any], params, low: list[str]) -> str:
    ev, s1, s2 = params.eval, params.stage1, params.stage2
    pos = metrics["dev_positive"]
    what = []
    if "answered_empty_rate" in low:
        what.append(f"it answers {{\"persons\":[]}} to {_pct(pos['answered_empty_rate'])} of Dev-Positive's "
                    f"{pos['n']} articles, which all name a person")
    if "recall" in low:
        what.append(f"Dev-Positive recall {_pct(pos['recall'])} is below eval.min_recall={_pct(ev.min_recall)}")
    if "person_f1" in low:
        what.append(f"person F1 {_pct(pos.get('person_f1'))} is below eval.min_person_f1={_pct(ev.min_person_f1)}")
    head = "**the model is not useful yet**: " + "; ".join(what) + ". "
    cmp_ = metrics.get("compare")
    floor = ev.min_recall
    if not cmp_:
        return head + ("Set eval.compare_subset > 0 to see which stage lost it; then follow the stage1 steps "
                       "below if the stage1 adapter is low too.")
    r1, r2, rq = (cmp_[k]["recall"] for k in ("stage1", "merged", "gguf"))
    n = cmp_["n"]
    if r1 is None or r1 < floor:
        size_hint = (f" stage1.size={s1.size} caps the mixture (the demo profile's CPU size): with a real corpus "
                     f"use `{cmd('stage1.size=null')}` (all positives + as many empties)." if s1.size else "")
        return head + (
            f"The stage1 adapter is already low ({_pct(r1)} on {n} articles{_interval(metrics, 'stage1')}): stage1 "
            f"did not learn the task, so stage2 and quantization are not the cause. Try, in this order:\n"
            f"   1. more stage1 steps: `{cmd('stage1.epochs=' + num(s1.epochs * 2))}`{size_hint}\n"
            f"   2. a higher stage1 learning rate: `{cmd('stage1.lr=' + num(s1.lr * 2))}` (the recipe: 2e-4)\n"
            f"   3. a larger base model (base.model), when a longer stage1 does not help")
    if r2 is None or r2 < floor:
        measured = _drop(metrics, "stage1", "merged", 0.0) != "unclear"
        verdict = ("stage2 drifted towards \"always empty\"" if measured else
                   f"stage2 is the likely cause, though on this subset {_not_measured(metrics, 'stage1', 'merged')}"
                   f" (to measure it, {_more_articles(metrics)})")
        return head + (
            f"stage1 reached {_pct(r1)}{_interval(metrics, 'stage1')}, the merged stage2 model {_pct(r2)}"
            f"{_interval(metrics, 'merged')} on {n} articles: {verdict}. Try, in this order:\n"
            + stage2_ladder(s2))
    return head + (f"The unquantized model reached {_pct(r2)} and {params.quantize.type} {_pct(rq)} on {n} articles: "
                   f"quantization lost it; try `{cmd('quantize.type=Q8_0')}`")


def advise(metrics: dict[str, Any], params, stage1: dict[str, Any] | None = None,
           previous: dict[str, Any] | None = None) -> str:
    """The advice as markdown. stage1 = metrics/details/stage1.json, previous = the last metrics/details/eval.json (both optional)."""
    ev, s2 = params.eval, params.stage2
    findings: list[str] = []

    # 0. levels: a useless model is flagged whatever the drops say
    low = low_levels(metrics, params)
    if low:
        findings.append(_level_finding(metrics, params, low))

    # 1. stage2 cost recall
    r1, r2 = _get(metrics, "compare", "stage1", "recall"), _get(metrics, "compare", "merged", "recall")
    stage2_drop = _drop(metrics, "stage1", "merged", ev.recall_drop_margin)
    blamed_stage2 = bool(low) and r1 is not None and r1 >= ev.min_recall and (r2 is None or r2 < ev.min_recall)
    if stage2_drop == "unclear" and not blamed_stage2:
        findings.append(
            f"stage2 recall {_pct(r2)}{_interval(metrics, 'merged')} vs stage1 {_pct(r1)}{_interval(metrics, 'stage1')}"
            f" on {metrics['compare']['n']} articles: {_not_measured(metrics, 'stage1', 'merged')}, so this is not "
            f"a measured drop. To tell, {_more_articles(metrics)}.")
    if stage2_drop == "drop" and "recall" not in low:
        findings.append(
            f"**stage2 lost recall**: dev_positive recall {_pct(r1)} after stage1, {_pct(r2)} after stage2 "
            f"(merged, unquantized; {metrics['compare']['n']} articles), a drop over the "
            f"{_pct(ev.recall_drop_margin)} margin. Try, one at a time, in this order:\n"
            + stage2_ladder(s2))

    # 2. stage1 overfits: held-out recall falls while the training loss still falls
    now, before = _get(metrics, "dev_positive", "recall"), _get(previous, "dev_positive", "recall")
    first, last, low = (_get(stage1, k) for k in ("first_loss", "last_loss", "min_loss"))
    still_falling = first is not None and last is not None and last < first and (low is None or last <= low * 1.05)
    if now is not None and before is not None and before - now > ev.recall_drop_margin and still_falling:
        findings.append(
            f"**stage1 overfits**: dev_positive recall fell {_pct(before)} → {_pct(now)} since the previous eval "
            f"while stage1's training loss kept falling ({first} → {last}). Add LoRA dropout to stage1: "
            f"`{cmd('stage1.lora_dropout=0.05')}`")

    # 3. quantization cost recall
    rq = _get(metrics, "compare", "gguf", "recall")
    qtype = params.quantize.type
    quant_drop = _drop(metrics, "merged", "gguf", ev.quant_drop_margin)
    if quant_drop == "unclear":
        findings.append(f"{qtype} recall {_pct(rq)}{_interval(metrics, 'gguf')} vs unquantized {_pct(r2)}"
                        f"{_interval(metrics, 'merged')}: {_not_measured(metrics, 'merged', 'gguf')}, not a measured "
                        "quantization loss.")
    if quant_drop == "drop":
        rank = QUANT_LADDER.index(qtype) if qtype in QUANT_LADDER else -1
        bigger = [q for q in BIGGER_QUANTS if QUANT_LADDER.index(q) > rank]
        tries = "; then ".join(f"`{cmd('quantize.type=' + q)}`" for q in bigger)
        findings.append(
            f"**quantization lost recall**: {qtype} recall {_pct(rq)} vs {_pct(r2)} unquantized on the same "
            f"{metrics['compare']['n']} articles (margin {_pct(ev.quant_drop_margin)}). "
            + (f"Try a larger quant type: {tries}" if bigger else
               f"{qtype} is already the largest type eval suggests: look for a chat-template or tokenizer "
               "mismatch between the HF model and the GGUF instead"))

    # 4. false positives
    fpr = _get(metrics, "dev_all", "false_positive_rate")
    valid = _get(metrics, "dev_all", "schema_valid_rate")
    if fpr is not None and fpr > ev.max_false_positive_rate:
        invalid_share = 1 - valid if valid is not None else None
        cause = ("most of them are invalid answers, see the parse rate below"
                 if invalid_share is not None and invalid_share >= fpr / 2 else
                 "the model names persons in articles that have none")
        findings.append(
            f"**false positive rate {_pct(fpr)}** on dev_all's empty articles (limit "
            f"{_pct(ev.max_false_positive_rate)}): {cause}. stage2 teaches the empty answer; give it more "
            f"empty examples: `{cmd('stage2.positive_ratio=' + num(max(0.0, s2.positive_ratio - 0.05)))}`")

    # 5. invalid answers
    truncated = _get(metrics, "dev_all", "truncated") or 0
    if valid is not None and valid < ev.min_parse_rate:
        parse = _get(metrics, "dev_all", "json_parse_rate")
        hint = (f"{truncated} answers hit eval.max_new_tokens={ev.max_new_tokens} (counted as failures): "
                "the model repeats itself or the limit is too low" if truncated else
                "the answers are not the trained JSON")
        tail = ("" if ev.grammar else
                f" To measure how much a JSON grammar recovers: `{cmd('eval.grammar=true')}` "
                "(reported under engine.grammar; the shipped Ollama model has no grammar).")
        findings.append(
            f"**only {_pct(valid)} of dev_all answers are valid** (JSON parse rate {_pct(parse)}): {hint}. "
            f"Check that the sanity gate passed and that stage1 trained (metrics/details/stage1.json).{tail}")
    elif truncated:
        findings.append(f"{truncated} dev_all answers hit eval.max_new_tokens={ev.max_new_tokens} and count "
                        "as failures; see data/predictions/dev_all.jsonl (verdict truncated).")

    # 6. names met in training found more often than new ones: Dev-Positive recall overstates production
    gap = _get(metrics, "dev_positive", "names_recall_gap") or {}
    if gap.get("ci95") and gap["ci95"][0] > ev.recall_drop_margin:
        seen, unseen = metrics["dev_positive"]["names"]["seen"], metrics["dev_positive"]["names"]["unseen"]
        findings.append(
            f"**names seen in training are found more often than new ones**: person recall "
            f"{_pct(seen['person_recall'])} of {seen['persons_gold']} seen names vs {_pct(unseen['person_recall'])} "
            f"of {unseen['persons_gold']} unseen (gap {_pct(gap['seen_minus_unseen'])}{_ci(gap['ci95'])}, over "
            f"the {_pct(ev.recall_drop_margin)} margin). The model partly remembers names instead of reading them, "
            "so Dev-Positive recall overstates how it does on articles about new people; the unseen figure is the "
            "one to trust. More training articles with other names are the remedy; no param of this recipe adds "
            "them.")

    head = "# Advice from eval\n\n"
    if not findings:
        pos, n_compared = metrics.get("dev_positive", {}), _get(metrics, "compare", "n")
        # a claim about stage2 and quantization needs the compare subset: without it, say that it was not measured
        kept = (f"recall kept through stage2 and quantization on the {n_compared}-article compare subset"
                if n_compared else "recall through stage2 and quantization not measured (eval.compare_subset is 0)")
        return head + (f"All checks pass: Dev-Positive recall {_pct(pos.get('recall'))} and person F1 "
                       f"{_pct(pos.get('person_f1'))} above their floors, {kept}, "
                       f"false positive rate {_pct(fpr)}, {_pct(valid)} valid answers. Nothing to change.\n")
    return head + "\n".join(f"{i}. {f}" for i, f in enumerate(findings, 1)) + "\n"


def write_advice(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="advice: what to try next, from metrics/details/eval.json")
    ap.add_argument("--metrics", type=Path, default=Path("metrics/details/eval.json"))
    ap.add_argument("--stage1-metrics", type=Path, default=Path("metrics/details/stage1.json"))
    ap.add_argument("--previous", type=Path, help="an earlier eval.json to compare dev_positive recall with")
    ap.add_argument("--out", type=Path, help="also write the advice here")
    args = ap.parse_args(argv)
    metrics = read_optional_json(args.metrics)
    if metrics is None:
        raise JinmeiError(f"{args.metrics}: not found or not JSON; run `dvc repro eval`")
    from jinmei.config.params import load_all

    text = advise(metrics, load_all(), read_optional_json(args.stage1_metrics), read_optional_json(args.previous))
    if args.out:
        write_advice(args.out, text)
    print(text)


if __name__ == "__main__":
    run_main(main)
