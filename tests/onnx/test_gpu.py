"""The CUDA execution provider path; runs only where a GPU and onnxruntime-gpu are present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import full_logits, mean_nll

from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.onnx.backend import CUDA, OrtBackend
from doctor.spec.modification import OnnxSpec


def _cuda_missing() -> str | None:
    import onnxruntime

    if CUDA not in onnxruntime.get_available_providers():
        return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if not (torch.cuda.is_available() or Path("/dev/nvidiactl").exists()):
        return "no NVIDIA GPU on this machine"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_cuda_missing() is not None, reason=str(_cuda_missing()))]


def test_cuda_provider_matches_cpu(demo_export, demo_windows, demo_reference):
    backend = OrtBackend(demo_export.path, device="cuda")
    assert backend.provider == CUDA, "ORT fell back to the CPU: CUDA/cuDNN libraries missing?"
    logits = full_logits(backend, demo_windows)
    assert (logits - demo_reference).abs().max().item() < 1e-2  # cuBLAS may use TF32
    assert mean_nll(logits, demo_windows) == pytest.approx(mean_nll(demo_reference, demo_windows), rel=1e-3)


@pytest.mark.parametrize("spec", [OnnxSpec(quantize="int4-weight", block_size=32), OnnxSpec(quantize="dynamic-int8")],
                         ids=["int4-b32", "int8"])
def test_quantized_models_run_on_cuda(demo_patient, demo_windows, demo_reference, onnx_out, spec, monkeypatch):
    # the modification picks the provider from the model's device; pretend the model lives on the GPU
    monkeypatch.setattr(type(demo_patient), "device", property(lambda self: torch.device("cuda")))
    ctx = ApplyContext(patient=demo_patient, undo=UndoLog(), calibration=lambda s: None, out_dir=onnx_out)
    applied = apply_modification(spec, ctx)
    logits = full_logits(ctx.state["backend"], demo_windows)
    assert torch.isfinite(logits).all()
    assert applied.realized["provider"] in (CUDA, "CPUExecutionProvider")
    if spec.quantize == "int4-weight":
        assert applied.realized["provider"] == CUDA  # MatMulNBits has a CUDA kernel
    assert abs(mean_nll(logits, demo_windows) / mean_nll(demo_reference, demo_windows) - 1) < 0.25
