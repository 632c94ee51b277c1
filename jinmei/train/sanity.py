"""The sanity gate: overfit a fresh LoRA on a few positives and demand that it learns them.

If loss does not fall or the answers do not approach the gold JSON, masking, chat template or target
modules are broken, and nothing after this stage is worth running.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from jinmei.errors import JinmeiError
from jinmei.files import write_json
from jinmei.infer.generate import greedy_answers
from jinmei.template.prompt import answer_text, parse_answer
from jinmei.train.trainer import TrainRun, is_main_process, train

DIAGNOSIS = """sanity gate FAILED: {why}
The recipe's usual suspects, in order:
  1. masking: is the loss on the answer only? (pytest tests/train/test_examples.py renders a masked example)
  2. chat template: does the base model's template match what the GGUF/eval use? (models/base/tokenizer_config.json)
  3. target modules: lora.target_modules must name the model's linear layers (q_proj ... down_proj for llama/qwen)
Also check that sanity.lr / sanity.steps are not too small for sanity.min_loss_ratio={ratio}."""


def run(p, rows: list[dict[str, Any]], base: Path, out: Path, gate: Path, metrics_file: Path, live: Path) -> None:
    """Train, answer the training articles greedily, write the verdict; raise if the gate fails."""
    sp = p.sanity
    if not rows:
        raise JinmeiError("the sanity split is empty; raise split.sanity_size")
    if gate.exists():
        gate.unlink()  # a stale "passed" must never survive a failing rerun
    result = train(TrainRun("sanity", p, sp, rows, Path(base), live_dir=live), out)
    if not is_main_process():
        return
    fields = list(p.schema.fields)
    answers = greedy_answers(result["model"], result["tokenizer"], p.prompt.system, [r["text"] for r in rows],
                             sp.max_new_tokens, sp.answer_batch_size)
    exact, examples = 0, []
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
    passed = loss_ratio >= sp.min_loss_ratio and exact_share >= sp.min_exact_match
    write_json(metrics_file, {**m, "loss_ratio": round(loss_ratio, 2), "exact_match": round(exact_share, 4),
                              "articles": len(rows), "passed": passed})
    for ex in examples:
        print(f"  {ex['id']}: {'EXACT' if ex['exact'] else 'diff '}\n    gold:   {ex['gold']}\n    answer: {ex['answer']}")
    print(f"[sanity] loss {m['first_loss']} -> {m['last_loss']} (x{loss_ratio:.1f}, need x{sp.min_loss_ratio}), "
          f"exact match {exact}/{len(rows)} = {exact_share:.0%} (need {sp.min_exact_match:.0%})")
    if not passed:
        why = []
        if loss_ratio < sp.min_loss_ratio:
            why.append(f"loss fell only x{loss_ratio:.2f} (sanity.min_loss_ratio={sp.min_loss_ratio})")
        if exact_share < sp.min_exact_match:
            why.append(f"exact match {exact_share:.0%} < sanity.min_exact_match={sp.min_exact_match}")
        raise JinmeiError(DIAGNOSIS.format(why="; ".join(why), ratio=sp.min_loss_ratio))
    write_json(gate, {"passed": True})
