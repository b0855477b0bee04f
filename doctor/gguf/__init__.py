"""GGUF files as patients: their facts, a dequantized safetensors cache keyed by SHA-256, and named models.

`doctor.gguf.load.load_gguf(path)` gives the model, tokenizer and facts of any GGUF transformers can dequantize;
this package's top level stays free of torch so that locating a file is cheap.
"""

from doctor.gguf.facts import GGUFFacts, read_facts
from doctor.gguf.named import NAMED_MODELS, find_gguf, locate_named

__all__ = ["NAMED_MODELS", "GGUFFacts", "find_gguf", "locate_named", "read_facts"]
