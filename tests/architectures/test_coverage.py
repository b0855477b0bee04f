"""Coverage accounting and `targets:` scope: what a weight modification touched, by module type; what it kept."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.compress.adapters import decoder_layers
from doctor.modifications import apply_modification
from doctor.spec.modification import PruneSpec, QuantizeSpec
from tests.conftest import as_patient, make_context


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(model, before) -> set[str]:
    return {k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])}


@pytest.mark.parametrize("spec", [QuantizeSpec(method="gptq", bits=3, targets={"modules": ["attention"]}),
                                  PruneSpec(method="wanda", sparsity=0.5, targets={"modules": ["attention"]})],
                         ids=["gptq", "wanda"])
def test_targets_narrow_to_attention(spec, tmp_path):
    model = tiny_model("llama")
    before = _weights(model)
    ctx = make_context(as_patient(model, "llama"), tmp_path, samples=4, seq_len=32)
    applied = apply_modification(spec, ctx)
    assert set(applied.realized["coverage_by_type"]) == {"attention"}
    assert applied.realized["coverage"] == 1.0
    changed = _changed(model, before)
    assert changed and all(".self_attn." in k for k in changed)
    assert len(changed) == 4 * len(decoder_layers(model))  # q, k, v, o of every layer
    ctx.undo.restore()
    assert not _changed(model, before)


def test_targets_narrow_to_layers_and_experts(tmp_path):
    model = tiny_model("mixtral")
    before = _weights(model)
    ctx = make_context(as_patient(model, "mixtral"), tmp_path, samples=4, seq_len=32)
    spec = QuantizeSpec(method="rtn", bits=4, targets={"modules": ["experts"], "layers": [-1]})
    applied = apply_modification(spec, ctx)
    assert set(applied.realized["coverage_by_type"]) == {"experts"}
    last = len(decoder_layers(model)) - 1
    block = decoder_layers(model)[last]
    for e, expert in enumerate(block.mlp.experts):
        assert not torch.equal(expert.gate_up_proj.weight, before[f"model.layers.{last}.mlp.experts.gate_up_proj"][e])
    assert not _changed(model, before)  # attention, other layers, and the (restorable) fused originals untouched
    ctx.undo.restore()


def test_mamba_keeps_dt_proj_and_the_recurrence_and_says_so(tmp_path):
    model = tiny_model("mamba")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = make_context(as_patient(model, "mamba"), tmp_path, samples=4, seq_len=32)
    applied = apply_modification(QuantizeSpec(method="gptq", bits=4, group_size=32), ctx)
    assert set(applied.realized["coverage_by_type"]) == {"ssm"} and applied.realized["coverage"] == 1.0
    kept = " ".join(applied.realized["kept"])
    assert all(name in kept for name in ("mixer.dt_proj", "mixer.A_log", "mixer.D", "mixer.conv1d"))
    changed = _changed(model, before)
    for i in range(len(decoder_layers(model))):
        for name in ("in_proj", "x_proj", "out_proj"):
            assert f"backbone.layers.{i}.mixer.{name}.weight" in changed
    assert not any(k for k in changed if any(p in k for p in ("dt_proj", "A_log", ".D", "conv1d")))
    ctx.undo.restore()


def test_coverage_is_reported_next_to_bits_and_sparsity():
    from types import SimpleNamespace

    from doctor.backends.torch_backend import TorchBackend
    from doctor.metrics.measuring import Measuring
    from doctor.metrics.registry import groups
    from doctor.report.view import METRIC_ORDER

    patient = as_patient(tiny_model("llama"), "llama")

    class Session:
        pass

    session = Session()
    session.patient = patient
    realized = {"effective_bits": 4.25, "quantized_weights": 100, "sparsity": 0.0, "coverage": 1.0,
                "target_weights": 100}
    measuring = Measuring(session, None, TorchBackend(patient.model), None, SimpleNamespace(realized=realized))
    metrics = groups()["size"].measure_fn()(measuring)
    assert metrics["coverage"].value == 1.0 and metrics["coverage"].n == 100
    assert METRIC_ORDER.index("coverage") == METRIC_ORDER.index("sparsity") + 1  # details table order
