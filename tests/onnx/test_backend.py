"""The ORT backend contract, backend selection by name, deployment metrics and the deployment suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import full_logits, mean_nll

from doctor.backends.factory import make_backend, resolve_device
from doctor.backends.torch_backend import TorchBackend
from doctor.errors import ConfigError, DoctorError, ModificationError
from doctor.metrics.deployment import measure_latency, measure_size, parameter_bytes
from doctor.onnx.backend import CPU, CUDA, OrtBackend, wanted_providers


def test_chunks_cover_every_position_once(demo_export, demo_windows):
    backend = OrtBackend(demo_export.path)
    whole = backend.logits(demo_windows)
    starts = []
    for start, logits in backend.logits_chunks(demo_windows, 96):
        assert logits.dtype == torch.float32 and logits.shape[1] <= 96
        assert torch.equal(logits, whole[:, start : start + logits.shape[1]])
        starts.append(start)
    assert starts == list(range(0, demo_windows.shape[1], 96))


def test_provider_choice():
    assert wanted_providers([CUDA, CPU], "cuda") == [CUDA, CPU]
    assert wanted_providers([CUDA, CPU], torch.device("cpu")) == [CPU]
    assert wanted_providers([CPU], "cuda:0") == [CPU]  # asked, unavailable: CPU, with a warning


def test_factory_builds_each_backend(demo_patient, demo_export, demo_windows, demo_reference, onnx_out):
    torch_backend = make_backend("torch", demo_patient, onnx_out, "cpu")
    assert isinstance(torch_backend, TorchBackend) and torch_backend.name == "torch"
    onnx_backend = make_backend("onnx", demo_patient, onnx_out, "auto")
    assert onnx_backend.name == "onnx" and onnx_backend.path == demo_export.path  # current weights: cached
    assert onnx_backend.provider == CPU
    nll = mean_nll(full_logits(onnx_backend, demo_windows), demo_windows)
    assert nll == pytest.approx(mean_nll(demo_reference, demo_windows), rel=1e-3)


def test_factory_rejects_unknown_names(demo_patient, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; known: torch, onnx"):
        make_backend("tensorrt", demo_patient, tmp_path, "cpu")


def test_factory_without_onnxruntime_fails_cleanly(demo_patient, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModificationError, match="onnxruntime"):
        make_backend("onnx", demo_patient, tmp_path, "cpu")


def test_device_follows_the_model_when_auto(demo_patient):
    assert resolve_device("auto", demo_patient) == demo_patient.device.type
    assert resolve_device("cuda:1", demo_patient) == "cuda"


def test_unreadable_model_is_a_modification_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ModificationError, match="cannot load model.onnx") as info:
        OrtBackend(bad)
    assert isinstance(info.value, DoctorError) and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_latency_is_a_median_over_repeats(demo_patient, demo_export, demo_windows, kind):
    backend = TorchBackend(demo_patient.model) if kind == "torch" else OrtBackend(demo_export.path)
    m = measure_latency(backend, demo_windows[:1, :128], repeats=4)
    assert m.n == 4 and 0 < m.lower <= m.value <= m.upper
    assert "1x128" in m.note and kind in m.note


def test_size_of_an_onnx_backend_is_its_files(demo_export):
    backend = OrtBackend(demo_export.path)
    assert measure_size(backend).value == pytest.approx(backend.file_size_bytes / 1e6)


def test_size_of_a_torch_model_counts_tied_weights_once(tiny_llama, demo_patient):
    p = tiny_llama.facts.params
    assert measure_size(TorchBackend(tiny_llama.model), tiny_llama).value == pytest.approx(p * 4 / 1e6)
    assert demo_patient.facts.tied_embeddings
    assert parameter_bytes(demo_patient.model, {}) == demo_patient.facts.params * 4


def test_size_uses_effective_bits_of_quantized_weights(tiny_llama):
    dense = parameter_bytes(tiny_llama.model, {})
    quantized = 10_000
    realized = {"effective_bits": 4.5, "quantized_weights": quantized}
    assert parameter_bytes(tiny_llama.model, realized) == pytest.approx(dense - quantized * (4 - 4.5 / 8))
    m = measure_size(TorchBackend(tiny_llama.model), tiny_llama, realized)
    assert "4.5 bits" in m.note


def test_deployment_suite_validates():
    from doctor.spec.suites import load_suite

    suite, path, _ = load_suite("deployment")
    assert Path(path).name == "deployment.yaml"
    mods = [c.modification for c in suite.checkups]
    assert {m.kind for m in mods} == {"onnx"}
    assert sorted((m.quantize, m.block_size) for m in mods if m.quantize == "int4-weight") == [
        ("int4-weight", 32), ("int4-weight", 128)
    ]
    assert all(set(c.metrics) == {"perplexity", "kl", "size", "latency"} for c in suite.checkups)
