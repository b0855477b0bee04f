"""GGUF files as patients: their facts, a dequantized safetensors cache keyed by SHA-256, and named models."""

from doctor.gguf.facts import GGUFFacts, read_facts
from doctor.gguf.load import LoadedGGUF, find_gguf, load_gguf
from doctor.gguf.named import NAMED_MODELS, locate_named

__all__ = ["NAMED_MODELS", "GGUFFacts", "LoadedGGUF", "find_gguf", "load_gguf", "locate_named", "read_facts"]
