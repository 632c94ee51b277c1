"""The answer JSON and the model's own chat template: the one prompt source, and its Ollama TEMPLATE."""
