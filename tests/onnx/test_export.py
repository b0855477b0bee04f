"""ONNX export: fp32 parity with PyTorch, dynamic axes, the weight-keyed cache, failures as ModificationError."""

from __future__ import annotations

import sys
import time

import pytest
import torch
from conftest import full_logits, mean_nll

from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.errors import ModificationError
from doctor.onnx.backend import OrtBackend
from doctor.onnx.export import (
    ExportSettings,
    _as_dtype,
    cache_key,
    export_model,
    files_size_bytes,
    onnx_files,
    weights_fingerprint,
)
from tests.conftest import assert_bit_identical, state_snapshot


def test_demo_fp32_logits_match_torch(demo_export, demo_windows, demo_reference):
    logits = full_logits(OrtBackend(demo_export.path), demo_windows)
    assert logits.shape == demo_reference.shape
    assert (logits - demo_reference).abs().max().item() < 1e-4
    nll_onnx, nll_torch = mean_nll(logits, demo_windows), mean_nll(demo_reference, demo_windows)
    assert abs(nll_onnx / nll_torch - 1) < 1e-3


def test_tiny_llama_fp32_logits_match_torch(tiny_session, onnx_out):
    exported = export_model(tiny_session.model, onnx_out)
    text = resolve_corpus("tinystories-valid", demo=True, purpose="eval")
    windows = eval_windows(tokenize(text, tiny_session.tokenizer), 128, 2)  # (2, 128) = its context
    reference = full_logits(TorchBackend(tiny_session.model), windows)
    logits = full_logits(OrtBackend(exported.path), windows)
    assert (logits - reference).abs().max().item() < 1e-4
    assert abs(mean_nll(logits, windows) / mean_nll(reference, windows) - 1) < 1e-3


@pytest.mark.parametrize("shape", [(1, 7), (3, 100), (5, 512)])
def test_batch_and_sequence_axes_are_dynamic(demo_patient, demo_export, shape):
    ids = torch.randint(0, demo_patient.facts.vocab, shape, generator=torch.Generator().manual_seed(sum(shape)))
    logits = OrtBackend(demo_export.path).logits(ids)
    assert logits.shape == (*shape, demo_patient.facts.vocab)
    assert (logits - full_logits(TorchBackend(demo_patient.model), ids)).abs().max().item() < 1e-4


def test_unchanged_weights_hit_the_cache(demo_patient, demo_export, onnx_out):
    start = time.perf_counter()
    again = export_model(demo_patient.model, onnx_out)
    assert again.cached and again.path == demo_export.path and again.key == demo_export.key
    assert time.perf_counter() - start < 5  # hashing only, no export


def test_cache_key_follows_every_weight_and_setting(tiny_llama):
    model = tiny_llama.model
    key = cache_key(model, ExportSettings())
    assert cache_key(model, ExportSettings(opset=19)) != key
    for name, tensor in model.state_dict().items():
        original = tensor.clone()
        with torch.no_grad():
            tensor.view(-1)[0] += 1e-6 if tensor.is_floating_point() else 1
        assert cache_key(model, ExportSettings()) != key, name
        with torch.no_grad():
            tensor.copy_(original)
    assert cache_key(model, ExportSettings()) == key


def test_fingerprint_sees_dtype(tiny_llama):
    before = weights_fingerprint(tiny_llama.model)
    assert weights_fingerprint(tiny_llama.model.to(torch.bfloat16)) != before


def test_temporary_float32_cast_restores_weights_exactly(tiny_llama):
    model = tiny_llama.model.to(torch.bfloat16)
    snapshot = state_snapshot(model)
    with _as_dtype(model, torch.float32):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert_bit_identical(model, snapshot)


def test_size_counts_model_and_external_data(demo_patient, demo_export):
    files = onnx_files(demo_export.path)
    assert files[0] == demo_export.path and len(files) >= 2 and all(f.is_file() for f in files)
    size = files_size_bytes(demo_export.path)
    assert size == OrtBackend(demo_export.path).file_size_bytes
    weight_bytes = demo_patient.facts.params * 4
    # the weights are stored once more only for the transposed copies; debug metadata is stripped
    assert weight_bytes <= size < 1.5 * weight_bytes


def test_export_failure_is_a_one_line_modification_error(tiny_llama, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("\x1b[96mstep 1/3\x1b[0m failed\nlong traceback text")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ModificationError) as info:
        export_model(tiny_llama.model, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert "LlamaForCausalLM" in message and "step 1/3 failed" in message
    assert not any((tmp_path / "onnx-cache").iterdir())  # no half-written cache entry


def test_missing_onnxscript_is_a_modification_error(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ModificationError, match="onnxscript"):
        export_model(tiny_llama.model, tmp_path)


@pytest.mark.slow
def test_unsupported_operator_fails_cleanly(tmp_path):
    from types import SimpleNamespace

    class Eigen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(16, 4)

        def forward(self, input_ids, use_cache=False):
            h = self.emb(input_ids)
            return SimpleNamespace(logits=torch.linalg.eigvals(h @ h.transpose(-1, -2)).real)

    with pytest.raises(ModificationError, match="linalg_eig"):
        export_model(Eigen(), tmp_path)


def test_prune_keeps_the_most_recently_used_entries(tmp_path):
    import os

    from doctor.onnx.export import INFO_FILE, prune_cache

    for age, name in enumerate(["newest", "middle", "oldest"]):
        (tmp_path / name).mkdir()
        info = tmp_path / name / INFO_FILE
        info.write_text("{}")
        os.utime(info, (1e9 - age * 100, 1e9 - age * 100))
    (tmp_path / ".half-written.tmp-1").mkdir()  # another process's export in flight: never touched
    (tmp_path / ".half-written.tmp-1" / INFO_FILE).write_text("{}")
    os.utime(tmp_path / ".half-written.tmp-1" / INFO_FILE, (1, 1))
    removed = prune_cache(tmp_path, keep=2)
    assert [p.name for p in removed] == ["oldest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".half-written.tmp-1", "middle", "newest"]


@pytest.mark.slow
def test_gpt2_conv1d_model_exports_with_parity(tiny_gpt2, tmp_path):
    exported = export_model(tiny_gpt2.model, tmp_path)
    ids = torch.randint(0, 128, (3, 128), generator=torch.Generator().manual_seed(0))
    reference = full_logits(TorchBackend(tiny_gpt2.model), ids)
    assert (OrtBackend(exported.path).logits(ids) - reference).abs().max().item() < 1e-4
