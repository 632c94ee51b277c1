"""Greedy answers with transformers: the sanity gate, and the unquantized side of eval's comparisons."""
from __future__ import annotations

from jinmei.prompt import messages


def greedy_answers(model, tokenizer, system: str, texts: list[str], max_new_tokens: int, batch: int = 8):
    """Greedy answers with transformers (sanity gate, and the unquantized side of eval's comparisons).

    Returns (answer, hit_limit) pairs: an answer that ran into max_new_tokens is flagged, never passed off
    as complete.
    """
    import torch

    model.eval()
    end_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id} - {None}
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(texts), batch):
        prompts = [tokenizer.apply_chat_template(messages(system, t), add_generation_prompt=True, tokenize=False)
                   for t in texts[start : start + batch]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=sorted(end_ids), pad_token_id=tokenizer.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1] :].tolist():
            stop = next((i for i, tok in enumerate(row) if tok in end_ids), None)
            ids = row if stop is None else row[:stop]
            results.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), stop is None))
    return results
