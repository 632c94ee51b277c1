"""`sanity`: overfit a fresh LoRA on a few positives and demand that it learns them.

If loss does not fall or the answers do not approach the gold JSON, masking, chat template or
target modules are broken, and nothing after this stage is worth running.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages.common import JinmeiError, load_params, read_jsonl, run_main, seed_everything, set_offline_env, \
    write_json
from stages.prompt import answer_text, parse_answer
from stages.validate import validate

DIAGNOSIS = """sanity gate FAILED: {why}
The recipe's usual suspects, in order:
  1. masking: is the loss on the answer only? (pytest tests/test_masking.py renders a masked example)
  2. chat template: does the base model's template match what the GGUF/eval use? (models/base/tokenizer_config.json)
  3. target modules: lora.target_modules must name the model's linear layers (q_proj ... down_proj for llama/qwen)
Also check that sanity.lr / sanity.steps are not too small for sanity.min_loss_ratio={ratio}."""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="adapter folder (kept for inspection)")
    ap.add_argument("--gate", type=Path, required=True, help="verdict file stage1 depends on")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--live", type=Path, required=True, help="dvclive folder for the loss curve")
    args = ap.parse_args(argv)

    set_offline_env()
    params = load_params()
    validate(params, "sanity", base_dir=args.base)
    sp = params["sanity"]
    seed_everything(int(params["seed"]))
    from stages.train import TrainJob, greedy_answers, train

    rows = read_jsonl(args.data)
    if not rows:
        raise JinmeiError(f"{args.data}: empty; raise split.sanity_size")
    if int(sp["steps"]) <= 0:
        raise JinmeiError(f"params.yaml: sanity.steps={sp['steps']} must be positive")
    if args.gate.exists():
        args.gate.unlink()  # a stale "passed" must never survive a failing rerun
    result = train(TrainJob(label="sanity", base_dir=args.base, rows=rows, params=params, lr=float(sp["lr"]),
                            steps=int(sp["steps"]), global_batch=sp.get("global_batch"), live_dir=args.live),
                   args.out)
    from stages.train import is_main_process

    if not is_main_process():
        return
    fields = params["schema"]["fields"]
    answers = greedy_answers(result["model"], result["tokenizer"], params["prompt"]["system"],
                             [r["text"] for r in rows], int(sp["max_new_tokens"]))
    exact = 0
    examples = []
    for row, (answer, hit_limit) in zip(rows, answers):
        value, verdict = parse_answer(answer, fields)
        gold = answer_text(row["output"], fields)
        ok = verdict == "ok" and not hit_limit and answer_text(value, fields) == gold
        exact += ok
        if len(examples) < 3:
            examples.append({"id": row["id"], "gold": gold, "answer": answer, "exact": ok})
    m = result["metrics"]
    loss_ratio = m["first_loss"] / max(m["last_loss"], 1e-8)
    exact_share = exact / len(rows)
    passed = loss_ratio >= float(sp["min_loss_ratio"]) and exact_share >= float(sp["min_exact_match"])
    write_json(args.metrics, {**m, "loss_ratio": round(loss_ratio, 2), "exact_match": round(exact_share, 4),
                              "articles": len(rows), "passed": passed})
    for ex in examples:
        print(f"  {ex['id']}: {'EXACT' if ex['exact'] else 'diff '}\n    gold:   {ex['gold']}\n    answer: {ex['answer']}")
    print(f"[sanity] loss {m['first_loss']} -> {m['last_loss']} (x{loss_ratio:.1f}, need x{sp['min_loss_ratio']}), "
          f"exact match {exact}/{len(rows)} = {exact_share:.0%} (need {float(sp['min_exact_match']):.0%})")
    if not passed:
        why = []
        if loss_ratio < float(sp["min_loss_ratio"]):
            why.append(f"loss fell only x{loss_ratio:.2f} (sanity.min_loss_ratio={sp['min_loss_ratio']})")
        if exact_share < float(sp["min_exact_match"]):
            why.append(f"exact match {exact_share:.0%} < sanity.min_exact_match={sp['min_exact_match']}")
        raise JinmeiError(DIAGNOSIS.format(why="; ".join(why), ratio=sp["min_loss_ratio"]))
    write_json(args.gate, {"passed": True})


if __name__ == "__main__":
    run_main(main)
