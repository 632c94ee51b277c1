"""A random-weight model of Qwen2.5-7B-Instruct's exact shape, as an HF folder the GGUF converter reads.

    python3 make_model.py OUT_DIR --tokenizer DIR [--shape qwen2.5-7b|tiny] [--device cuda]

No weights can be downloaded on the GPU machine, and throughput does not depend on weight values. Shape:
hidden 3584, 28 layers, 28 heads / 4 KV heads (head 128), intermediate 18944, vocab 152064, untied lm_head,
rope theta 1e6 (Qwen2ForCausalLM). The tokenizer is SmolLM2's (the project's, 49,152 tokens, ChatML): the
converter pads the GGUF vocabulary to the config's 152,064 with unused [PADn] entries, so every tensor,
embedding and lm_head included, has the real 7B size. Weights are normal(0, 0.02), saved in float16 (the
converter's f16 output is then a plain copy).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

SHAPES = {
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=152064),
    "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=512, vocab_size=152064),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--shape", default="qwen2.5-7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    start = time.perf_counter()
    tok_cfg = json.loads((args.tokenizer / "tokenizer_config.json").read_text())
    vocab = json.loads((args.tokenizer / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    cfg = Qwen2Config(**SHAPES[args.shape], max_position_embeddings=32768, rope_theta=1_000_000.0,
                      rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", attention_dropout=0.0,
                      use_sliding_window=False, bos_token_id=ids[tok_cfg["bos_token"]],
                      eos_token_id=ids[tok_cfg["eos_token"]], pad_token_id=ids[tok_cfg["pad_token"]])
    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    with torch.no_grad():
        for p in model.parameters():          # from_config's init leaves norms at 1, matrices ~N(0, 0.02)
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
    n = sum(p.numel() for p in model.parameters())
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out, max_shard_size="5GB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(args.tokenizer / name, args.out / name)
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    print(f"built {args.shape}: {n / 1e9:.3f} B parameters, {size / 1e9:.2f} GB of float16 safetensors in "
          f"{time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
