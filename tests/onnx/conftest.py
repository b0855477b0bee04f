"""Exports are slow (tens of seconds), so exports are shared by the whole session and kept between sessions.

The export cache is keyed by the weights and settings; the folder it lives in is keyed by the source of the
export and ORT-quantization code, so a code change always re-exports.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.onnx.export import Exported, export_model
from tests.conftest import as_patient, tiny_llama_model


def full_logits(backend, ids: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits.cpu() for _, logits in backend.logits_chunks(ids, 100)], dim=1)


def mean_nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).mean().item()


def _code_hash() -> str:
    import doctor.onnx.export as export
    import doctor.onnx.variants as variants

    digest = hashlib.sha256()
    for module in (export, variants):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def onnx_out(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return tmp_path_factory.mktemp("onnx-out")
    folder = cache.mkdir(f"onnx-exports-{_code_hash()}")
    for stale in folder.parent.glob("onnx-exports-*"):
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def demo_export(demo_patient, onnx_out) -> Exported:
    return export_model(demo_patient.model, onnx_out)


@pytest.fixture(scope="session")
def demo_windows(demo_patient) -> torch.Tensor:
    text = resolve_corpus("tinystories-valid", demo=True, purpose="eval")
    return eval_windows(tokenize(text, demo_patient.tokenizer), 512, 2)  # (2, 512)


@pytest.fixture(scope="session")
def demo_reference(demo_patient, demo_windows) -> torch.Tensor:
    return full_logits(TorchBackend(demo_patient.model), demo_windows)


@pytest.fixture(scope="session")
def tiny_session():
    """A tiny random Llama shared by the tests that only read it, with its export."""
    return as_patient(tiny_llama_model(), "tiny-llama")
