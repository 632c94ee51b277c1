"""What to try next, from eval's metrics and the recipe's rules, as `dvc exp run -S ...` commands.

Rules, in the order they are checked (docs/metrics.md explains the metrics they read):
1. stage2 lost recall: stage1 recall - merged recall > eval.recall_drop_margin on the compare subset
   → fewer stage2 steps (stage2.epochs / 2), then stage2.lr / 2, then stage2.positive_ratio + 0.05.
2. stage1 overfits: dev_positive recall fell since the previous eval by more than recall_drop_margin
   while stage1's training loss was still falling at its end → stage1.lora_dropout=0.05.
3. quantization lost recall: merged recall - GGUF recall > eval.quant_drop_margin → a larger quant type.
4. too many false positives on empty articles (> eval.max_false_positive_rate).
5. too few valid answers (schema_valid_rate < eval.min_parse_rate), truncated answers.
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


def advise(metrics: dict[str, Any], params, stage1: dict[str, Any] | None = None,
           previous: dict[str, Any] | None = None) -> str:
    """The advice as markdown. stage1 = metrics/stage1.json, previous = the last metrics/eval.json (both optional)."""
    ev, s2 = params.eval, params.stage2
    findings: list[str] = []

    # 1. stage2 cost recall
    r1, r2 = _get(metrics, "compare", "stage1", "recall"), _get(metrics, "compare", "merged", "recall")
    if r1 is not None and r2 is not None and r1 - r2 > ev.recall_drop_margin:
        findings.append(
            f"**stage2 lost recall**: dev_positive recall {_pct(r1)} after stage1, {_pct(r2)} after stage2 "
            f"(merged, unquantized; {metrics['compare']['n']} articles), a drop over the "
            f"{_pct(ev.recall_drop_margin)} margin. Try, one at a time, in this order:\n"
            f"   1. fewer stage2 steps: `{cmd('stage2.epochs=' + num(s2.epochs / 2))}`\n"
            f"   2. a lower stage2 learning rate: `{cmd('stage2.lr=' + num(s2.lr / 2))}`\n"
            f"   3. more positives in stage2: `{cmd('stage2.positive_ratio=' + num(s2.positive_ratio + 0.05))}`")

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
    if r2 is not None and rq is not None and r2 - rq > ev.quant_drop_margin:
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
            f"Check that the sanity gate passed and that stage1 trained (metrics/stage1.json).{tail}")
    elif truncated:
        findings.append(f"{truncated} dev_all answers hit eval.max_new_tokens={ev.max_new_tokens} and count "
                        "as failures; see data/predictions/dev_all.jsonl (verdict truncated).")

    head = "# Advice from eval\n\n"
    if not findings:
        return head + ("All checks pass: recall kept through stage2 and quantization, false positive rate "
                       f"{_pct(fpr)}, {_pct(valid)} valid answers. Nothing to change.\n")
    return head + "\n".join(f"{i}. {f}" for i, f in enumerate(findings, 1)) + "\n"


def write_advice(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="advice: what to try next, from metrics/eval.json")
    ap.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    ap.add_argument("--stage1-metrics", type=Path, default=Path("metrics/stage1.json"))
    ap.add_argument("--previous", type=Path, help="an earlier eval.json to compare dev_positive recall with")
    ap.add_argument("--out", type=Path, help="also write the advice here")
    args = ap.parse_args(argv)
    metrics = read_optional_json(args.metrics)
    if metrics is None:
        raise JinmeiError(f"{args.metrics}: not found or not JSON; run `dvc repro eval`")
    from jinmei.params import load_all

    text = advise(metrics, load_all(), read_optional_json(args.stage1_metrics), read_optional_json(args.previous))
    if args.out:
        write_advice(args.out, text)
    print(text)


if __name__ == "__main__":
    run_main(main)
