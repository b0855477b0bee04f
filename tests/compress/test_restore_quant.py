"""Restore after RTN, GPTQ and AWQ is bit-for-bit, including AWQ's rescaled norms and failures half-way."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_bit_identical, make_context, state_snapshot

from doctor.compress import gptq
from doctor.modifications import apply_modification
from doctor.spec.modification import ComposeSpec, QuantizeSpec

SPECS = {
    "rtn": QuantizeSpec(method="rtn", bits=3, group_size=16),
    "gptq": QuantizeSpec(method="gptq", bits=3, group_size=16, symmetric=True),
    "gptq-act-order": QuantizeSpec(method="gptq", bits=4, act_order=True),
    "awq": QuantizeSpec(method="awq", bits=3, group_size=16, grid=6),
    "awq-then-gptq": ComposeSpec(
        steps=[QuantizeSpec(method="awq", bits=4, grid=4), QuantizeSpec(method="gptq", bits=3, group_size=32)]
    ),
}


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("name", list(SPECS))
def test_restore_is_bit_exact(fixture, name, request, tmp_path) -> None:
    patient = request.getfixturevalue(fixture)
    ctx = make_context(patient, tmp_path, samples=4, seq_len=32)
    snapshot = state_snapshot(patient.model)
    apply_modification(SPECS[name], ctx)
    changed = [k for k, v in patient.model.state_dict().items() if not torch.equal(v, snapshot[k])]
    assert changed
    ctx.undo.restore()
    assert_bit_identical(patient.model, snapshot)


def test_restore_after_awq_on_the_demo_model(demo_patient, tmp_path) -> None:
    ctx = make_context(demo_patient, tmp_path, samples=2, seq_len=64)
    snapshot = state_snapshot(demo_patient.model)
    try:
        apply_modification(QuantizeSpec(method="awq", bits=4, group_size=32, grid=4), ctx)
        state = demo_patient.model.state_dict()
        assert not torch.equal(state["model.layers.0.input_layernorm.weight"], snapshot["model.layers.0.input_layernorm.weight"])
    finally:
        ctx.undo.restore()
    assert_bit_identical(demo_patient.model, snapshot)


def test_restore_after_gptq_fails_half_way(tiny_llama, tmp_path, monkeypatch) -> None:
    real = gptq.gptq_quantize
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:  # inside the second layer (one call per group of linears sharing an input)
            raise RuntimeError("numerical trouble")
        return real(*args, **kwargs)

    monkeypatch.setattr(gptq, "gptq_quantize", failing)
    ctx = make_context(tiny_llama, tmp_path, samples=2, seq_len=16)
    snapshot = state_snapshot(tiny_llama.model)
    with pytest.raises(RuntimeError, match="numerical trouble"):
        apply_modification(QuantizeSpec(method="gptq", bits=2), ctx)
    assert len(ctx.undo) > 0
    ctx.undo.restore()
    assert_bit_identical(tiny_llama.model, snapshot)
