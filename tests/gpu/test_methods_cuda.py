"""The calibrated methods on a GPU: GPTQ, SparseGPT, Wanda and AWQ give the demo model the same perplexity as on
the CPU (float32, same calibration windows), keep the model's dtype and device, and restore it exactly."""

from __future__ import annotations

import math

import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.metrics.evaluation import baseline_pass
from doctor.modifications import apply_modification
from doctor.patient import load_patient
from doctor.spec.modification import CalibrationSpec, PruneSpec, QuantizeSpec
from tests.conftest import make_context

from . import CUDA

pytestmark = CUDA

CAL = CalibrationSpec(corpus="tinystories-calib", samples=8, seq_len=128, seed=0)
METHODS = {
    "gptq-w4-g32": QuantizeSpec(method="gptq", bits=4, group_size=32, calibration=CAL),
    "awq-w4-g32": QuantizeSpec(method="awq", bits=4, group_size=32, calibration=CAL),
    "sparsegpt-50": PruneSpec(method="sparsegpt", sparsity=0.5, calibration=CAL),
    "wanda-50": PruneSpec(method="wanda", sparsity=0.5, calibration=CAL),
    "wanda-2of4": PruneSpec(method="wanda", structure="nm", n=2, m=4, calibration=CAL),
}


def _ppl(patient, windows: torch.Tensor) -> float:
    result, _ = baseline_pass(TorchBackend(patient.model), windows, patient.facts.vocab, batch_size=2)
    return math.exp(float(result.nll.mean()))


def _modified_ppl(patient, spec, tmp_path) -> tuple[float, float]:
    """(perplexity before, perplexity after the modification) on 4 windows of 256 tokens; restored after."""
    text = resolve_corpus("tinystories-valid", demo=True, purpose="eval")
    windows = eval_windows(tokenize(text, patient.tokenizer), 256, 4)
    before = {k: v.detach().clone() for k, v in patient.model.state_dict().items()}
    ctx = make_context(patient, tmp_path)
    apply_modification(spec, ctx)
    device = next(patient.model.parameters()).device
    assert {p.device for p in patient.model.parameters()} == {device}
    assert {p.dtype for p in patient.model.parameters()} == {v.dtype for v in before.values()}
    ppl = _ppl(patient, windows)
    ctx.undo.restore()
    state = patient.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    return _ppl(patient, windows), ppl


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_on_cuda_matches_cpu(name, tmp_path):
    cpu = _modified_ppl(load_patient(None, device="cpu"), METHODS[name], tmp_path / "cpu")
    gpu = _modified_ppl(load_patient(None, device="cuda"), METHODS[name], tmp_path / "cuda")
    # float32 on both; GPTQ/SparseGPT feed rounding decisions forward, so a tie broken the other way moves a
    # few weights: the perplexities agree to well under the differences between methods (several percent)
    assert gpu == pytest.approx(cpu, rel=2e-3), (name, cpu, gpu)
    assert gpu[1] > gpu[0]  # the modification did something


@pytest.mark.parametrize(("name", "solver"), [("gptq-w4-g32", "gptq"), ("sparsegpt-50", "sparsegpt")])
def test_hessian_methods_in_bf16_on_cuda(name, solver, tmp_path, monkeypatch):
    """A bf16 model: the Hessian and its inverse factor are float32 on the GPU; the result lands in bf16."""
    import importlib

    module = importlib.import_module(f"doctor.compress.{solver}")
    seen = []
    factor = module.inverse_hessian_factor

    def spy(H, damp, *args, **kwargs):
        out = factor(H, damp, *args, **kwargs)
        seen.append((H.dtype, H.device.type, out.dtype, out.device.type))
        return out

    monkeypatch.setattr(module, "inverse_hessian_factor", spy)
    base32, mod32 = _modified_ppl(load_patient(None, device="cuda"), METHODS[name], tmp_path / "fp32")
    seen.clear()
    base16, mod16 = _modified_ppl(load_patient(None, device="cuda", dtype="bfloat16"), METHODS[name], tmp_path / "bf16")
    # what the method costs the model in perplexity stays within a few percent of float32's; the same test on
    # the CPU (bf16 against float32) measured GPTQ within 3% and SparseGPT 50% at 3.9% (5.39x against 5.61x)
    assert mod16 / base16 == pytest.approx(mod32 / base32, rel=6e-2)
    assert seen and set(seen) == {(torch.float32, "cuda", torch.float32, "cuda")}
