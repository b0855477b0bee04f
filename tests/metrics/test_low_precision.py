"""A bf16 model on the CPU exercises the dtype paths a GPU run takes: the layer probe replays its float32 record
in the block's own dtype, the calibrated solvers keep Hessians and their inverses in float32, Wanda scores in
float32, and every modification lands in the model's dtype and comes back bit for bit."""

from __future__ import annotations

import importlib

import pytest
import torch

from doctor.compress.adapters import decoder_layers
from doctor.metrics.layerwise import LayerProbe
from doctor.modifications import apply_modification
from doctor.modifications.base import UndoLog
from doctor.patient import load_patient
from doctor.spec.modification import PruneSpec, QuantizeSpec
from tests.conftest import assert_bit_identical, make_context, state_snapshot, tiny_llama_model


def test_layer_probe_on_a_bf16_model_localises_a_change():
    model = tiny_llama_model(layers=3).to(torch.bfloat16)
    windows = torch.randint(3, 128, (2, 24), generator=torch.Generator().manual_seed(0))
    probe = LayerProbe.capture(model, windows)
    assert all(s.rel_error == 0.0 and s.extra["local_error"] == 0.0 for s in probe.compare(model))
    weight = decoder_layers(model)[1].mlp.down_proj.weight
    undo = UndoLog()
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * weight.std())
    stats = probe.compare(model, undo.originals())
    undo.restore()
    local = {s.layer: s.extra["local_error"] for s in stats}
    assert max(local, key=local.get) == 1 and local[0] == 0.0
    assert 0.3 < next(s for s in stats if s.layer == 1).extra["module_error.down_proj"] < 3.0


@pytest.fixture(scope="module")
def bf16_demo():
    return load_patient(None, dtype="bfloat16")


@pytest.mark.parametrize(("spec", "solver"), [
    (QuantizeSpec(method="gptq", bits=4, group_size=32), "gptq"),
    (PruneSpec(method="sparsegpt", sparsity=0.5), "sparsegpt"),
])
def test_hessian_solvers_run_in_float32_on_a_bf16_model(bf16_demo, spec, solver, tmp_path, monkeypatch):
    module = importlib.import_module(f"doctor.compress.{solver}")
    factor, seen = module.inverse_hessian_factor, []

    def spy(H, damp, *args, **kwargs):
        out = factor(H, damp, *args, **kwargs)
        seen.append((H.dtype, out.dtype))
        return out

    monkeypatch.setattr(module, "inverse_hessian_factor", spy)
    before = state_snapshot(bf16_demo.model)
    ctx = make_context(bf16_demo, tmp_path, samples=4)
    apply_modification(spec, ctx)
    assert {p.dtype for p in bf16_demo.model.parameters()} == {torch.bfloat16}
    changed = [k for k, v in bf16_demo.model.state_dict().items() if not torch.equal(v, before[k])]
    ctx.undo.restore()
    assert changed and seen and set(seen) == {(torch.float32, torch.float32)}
    assert_bit_identical(bf16_demo.model, before)


def test_wanda_scores_a_bf16_weight_in_float32():
    from doctor.compress.wanda import wanda_score

    weight = torch.tensor([[1.0, 1.0 + 2**-7]], dtype=torch.bfloat16)  # one bf16 step apart
    norm = torch.tensor([1.0 + 2**-9, 1.0])  # float32: the products differ by less than a bf16 step
    score = wanda_score(weight, norm)
    assert score.dtype == torch.float32 and score[0, 0] < score[0, 1]
    assert score[0, 1] - score[0, 0] == pytest.approx(2**-7 - 2**-9, abs=1e-7)
