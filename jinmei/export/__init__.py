"""Merge the adapter, HF -> GGUF -> Q4_K_M, the Ollama Modelfile, parity checks."""
