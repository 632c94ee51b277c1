"""Llama.cpp in a worker process (eval and jinmei-predict), HF greedy decoding."""
