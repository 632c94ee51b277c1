"""The base model as one plain HF folder with its tokenizer and template."""
