"""Ready-made compressed artifacts (GGUF, GPTQ/AWQ packed, compressed-tensors, safetensors) read as candidates."""
