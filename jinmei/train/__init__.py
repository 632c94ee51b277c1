"""Masked examples, the trainer (transformers+peft+TRL or Unsloth), the memory plan, the sanity gate."""
