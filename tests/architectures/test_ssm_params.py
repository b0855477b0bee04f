"""`ssm_params: quantize` on Mamba and on a Mamba/attention hybrid: dt_proj, A_log, D and conv1d are rounded to
nearest (whatever the method), counted in coverage and no longer stated as kept; the default keeps them."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.architectures import Unsupported
from doctor.compress.adapters import decoder_layers
from doctor.compress.quantizer import quantize_rtn
from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.ssm_params import as_rows
from doctor.spec.base import TargetSpec
from doctor.spec.modification import QuantizeSpec
from tests.conftest import as_patient, make_context, state_snapshot

NAMES = ("mixer.dt_proj.weight", "mixer.A_log", "mixer.D", "mixer.conv1d.weight")


def _params(model) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": dict(b.named_parameters())[n] for i, b in enumerate(decoder_layers(model)) for n in NAMES}


def _trained_looking(model):
    """Random init sets D to ones (exact on any grid); give every parameter values off the grid."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in _params(model).values():
            param.add_(0.1 * torch.randn(param.shape, generator=g))
    return model


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_mamba_recurrence_is_rounded_and_counted(method, tmp_path):
    model = _trained_looking(tiny_model("mamba"))
    before, originals = state_snapshot(model), {k: v.detach().clone() for k, v in _params(model).items()}
    ctx = make_context(as_patient(model, "mamba"), tmp_path, samples=4, seq_len=32)
    spec = QuantizeSpec(method=method, bits=3, group_size=32, ssm_params="quantize")
    realized = apply_modification(spec, ctx).realized
    assert realized["coverage"] == 1.0
    assert sorted(realized["ssm_params_rtn"]) == sorted(originals)
    assert not any(k.startswith(("mixer.dt_proj", "mixer.A_log", "mixer.D", "mixer.conv1d"))
                   for k in realized["kept"])
    linears = sum(m.weight.numel() for b in decoder_layers(model) for n, m in b.named_modules()
                  if n in ("mixer.in_proj", "mixer.x_proj", "mixer.out_proj"))
    assert realized["coverage_by_type"]["ssm"]["target"] == linears + sum(p.numel() for p in originals.values())
    for name, param in _params(model).items():
        old = originals[name]
        expected = quantize_rtn(as_rows(old), 3, 32, False).reshape(old.shape)
        assert torch.equal(param.detach(), expected), name  # round to nearest, under GPTQ too
        assert not torch.equal(param.detach(), old), name
    assert realized["quantized_weights"] == realized["target_weights"]
    ctx.undo.restore()
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_default_keeps_the_recurrence_and_says_so(tmp_path):
    model = tiny_model("mamba")
    originals = {k: v.detach().clone() for k, v in _params(model).items()}
    ctx = make_context(as_patient(model, "mamba"), tmp_path, samples=2, seq_len=16)
    realized = apply_modification(QuantizeSpec(method="rtn", bits=4, group_size=32), ctx).realized
    assert realized["coverage"] == 1.0 and "ssm_params_rtn" not in realized
    assert all(torch.equal(p.detach(), originals[k]) for k, p in _params(model).items())
    assert any(k.startswith("mixer.A_log") for k in realized["kept"])


def test_hybrid_rounds_its_mamba_layers_only(tmp_path):
    model = tiny_model("jamba")
    ctx = make_context(as_patient(model, "jamba"), tmp_path, samples=2, seq_len=16)
    realized = apply_modification(QuantizeSpec(method="rtn", bits=4, group_size=32, ssm_params="quantize"),
                                  ctx).realized
    mamba_layers = [i for i, b in enumerate(decoder_layers(model)) if hasattr(b, "mamba")]
    assert mamba_layers and {int(n.split(".")[0]) for n in realized["ssm_params_rtn"]} == set(mamba_layers)
    assert realized["coverage"] == 1.0
    assert not any(k.startswith("mamba.A_log") for k in realized["kept"])


def test_nothing_to_round_is_refused(tmp_path):
    ctx = make_context(as_patient(tiny_model("llama"), "llama"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(Unsupported, match="no state-space parameters"):
        apply_modification(QuantizeSpec(method="rtn", bits=4, ssm_params="quantize"), ctx)
    ctx = make_context(as_patient(tiny_model("jamba"), "jamba"), tmp_path, samples=2, seq_len=16)
    spec = QuantizeSpec(method="rtn", bits=4, ssm_params="quantize", targets=TargetSpec(modules=["attention"]))
    with pytest.raises(ModificationError, match="no state-space layer in scope"):
        apply_modification(spec, ctx)
