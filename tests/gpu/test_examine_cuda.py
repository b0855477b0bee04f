"""The quick suite on the demo model on a GPU, in float32 and bfloat16: every checkup runs, the numbers agree with
the same examination on the CPU, and the weights come back bit for bit on the device they were on."""

from __future__ import annotations

import math

import pytest
import torch

from doctor.examination.runner import Options, examine
from doctor.patient import load_patient
from doctor.spec.suites import load_suite

from . import CUDA

pytestmark = CUDA

# relative agreement of perplexities between CPU and GPU: float32 differs only in reduction order; bf16 also in
# which kernels round where
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


def _quick(windows: int = 8):
    suite, _, _ = load_suite("quick")
    return suite.model_copy(update={"eval": suite.eval.model_copy(update={"max_windows": windows})})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_quick_suite_on_cuda_matches_cpu(dtype, tmp_path):
    suite = _quick()
    on_cpu = examine(load_patient(None, device="cpu", dtype=dtype), suite,
                     Options(out_dir=tmp_path / "cpu", use_predictor=False))
    patient = load_patient(None, device="cuda", dtype=dtype)
    before = {k: v.detach().clone() for k, v in patient.model.state_dict().items()}
    on_gpu = examine(patient, suite, Options(out_dir=tmp_path / "cuda", device="cuda", use_predictor=False))

    assert on_gpu.baseline.health["backend"] == "torch/cuda"
    assert [(c.id, c.status, c.error) for c in on_gpu.checkups] == [(c.id, "ok", None) for c in on_gpu.checkups]
    tol = TOLERANCE[dtype]
    assert math.isclose(on_gpu.baseline.metrics["ppl"].value, on_cpu.baseline.metrics["ppl"].value, rel_tol=tol)
    for gpu, cpu in zip(on_gpu.checkups, on_cpu.checkups, strict=True):
        assert math.isclose(gpu.metrics["ppl"].value, cpu.metrics["ppl"].value, rel_tol=tol), gpu.id
        assert gpu.metrics["kl_mean"].value == pytest.approx(cpu.metrics["kl_mean"].value, rel=10 * tol, abs=1e-4)
    state = patient.model.state_dict()
    for name, value in before.items():
        assert state[name].device.type == "cuda" and state[name].dtype == value.dtype, name
        assert torch.equal(state[name], value), name
