"""Greedy answers with transformers: the sanity gate, and the unquantized side of eval's comparisons."""
from __future__ import annotations

from jinmei.template import chat
from jinmei.train.examples import chat_format_of


def greedy_answers(model, tokenizer, system: str, texts: list[str], max_new_tokens: int, batch: int = 8):
    """Returns (answer, hit_limit) pairs: an answer that ran into max_new_tokens is flagged, never passed off as
    complete. Prompts are the ids training used (jinmei.template.chat), left-padded; decoding stops on the template's
    end-of-turn token (or EOS)."""
    import torch

    model.eval()
    fmt = chat_format_of(tokenizer)
    _, end_id = chat.end_of_turn(tokenizer, fmt)
    end_ids = sorted({end_id, tokenizer.eos_token_id} - {None})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(texts), batch):
        prompts = [chat.prompt_ids(tokenizer, fmt, system, t) for t in texts[start: start + batch]]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=1, eos_token_id=end_ids, pad_token_id=pad)
        for row in out[:, width:].tolist():
            stop = next((i for i, tok in enumerate(row) if tok in end_ids), None)
            answer = row if stop is None else row[:stop]
            results.append((tokenizer.decode(answer, skip_special_tokens=True).strip(), stop is None))
    return results
