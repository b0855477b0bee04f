"""Family facts from the model's own names, through the alias table with whole-token matching."""

from __future__ import annotations

import pytest

from doctor.predict.families import family_of, identify, tokens
from doctor.predict.table import family_fact


@pytest.mark.parametrize(("name", "family", "tokens_"), [
    ("huggyllama/llama-30b", "LLaMA", 1.4e12),  # not LLaMA-3: '30b' is a size, not version 3
    ("huggyllama/llama-7b", "LLaMA", 1.0e12),
    ("meta-llama/Meta-Llama-3-8B", "LLaMA-3", 15e12),
    ("meta-llama/Llama-3.1-70B", "LLaMA-3", 15e12),
    ("meta-llama/Llama-3.2-1B-Instruct", "LLaMA-3", 9e12),
    ("meta-llama/Llama-2-7b-hf", "LLaMA-2", 2e12),
    ("Qwen/Qwen2.5-0.5B", "Qwen2.5", 18e12),  # not Qwen2
    ("Qwen/Qwen2-0.5B", "Qwen2", 12e12),
    ("Qwen/Qwen3-0.6B", "Qwen3", 36e12),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2", 2e12),
    ("HuggingFaceTB/SmolLM2-1.7B", "SmolLM2", 11e12),
    ("HuggingFaceTB/SmolLM-135M", "SmolLM", 600e9),
    ("google/gemma-2b", "Gemma", 3e12),  # '2b' is a size: Gemma 1, not Gemma 2
    ("google/gemma-2-9b", "Gemma-2", 8e12),
    ("microsoft/Phi-3-mini-4k-instruct", "Phi-3", 3.3e12),
    ("facebook/opt-125m", "OPT", 180e9),
    ("EleutherAI/pythia-160m", "Pythia", 300e9),
    ("mistralai/Mistral-7B-v0.1", "Mistral", None),
])  # fmt: skip
def test_names_map_to_families_and_training_tokens(name, family, tokens_):
    fact = family_fact(None, name)
    assert (fact.family, fact.training_tokens) == (family, tokens_)


def test_unknown_names_stay_unknown():
    assert family_of("stories260k") is None and family_of("llama-4-scout") is None
    assert family_fact(None, "my-finetune") is None


def test_size_match_is_token_bounded():
    assert tokens("SmolLM2-1360M") == ["smollm2", "1360m"]
    assert family_fact("SmolLM2", "SmolLM2-1360M").training_tokens == 2e12  # not the 360M row


def test_identify_prefers_metadata_and_falls_back_to_the_tokenizer():
    named = [("GGUF general.basename", "smollm2"), ("GGUF general.name", "Smollm2 135M 8k Lc100K Mix1 Ep2"),
             ("model name", "tinyllama-like-name")]
    found = identify(named)
    assert found.family == "SmolLM2" and found.evidence == "GGUF general.basename 'smollm2'"
    assert found.name.startswith("Smollm2 135M")  # the first name carrying a size decides within the family
    by_vocab = identify([("model name", "my-model")], vocab=128256)
    assert by_vocab.family == "LLaMA-3" and "vocabulary of 128256" in by_vocab.evidence
    assert identify([("model name", "my-model")], vocab=32000) is None
