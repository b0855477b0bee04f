"""Routing of mixture-of-experts models: expert pruning by routing frequency and the routing-shift measures."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.architectures.routing import capture_routing, routing_shift
from doctor.compress.adapters import decoder_layers
from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.experts import apply_prune_experts
from doctor.spec.modification import QuantizeSpec
from tests.conftest import as_patient, make_context

IDS = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(0))


def _spec(count=1, fraction=None):
    from doctor.modifications.kinds.prune_experts import PruneExpertsSpec

    return PruneExpertsSpec(count=count, fraction=fraction)


def test_routing_matches_the_router_and_an_unchanged_model_has_no_shift():
    model = tiny_model("mixtral")
    routing = capture_routing(model, IDS)
    assert [r.layer for r in routing] == [0, 1]
    for r in routing:
        assert r.logits.shape == (IDS.numel(), 4) and r.chosen.shape == (IDS.numel(), 2)
        assert torch.equal(r.chosen.sort(-1).values, torch.topk(r.logits, 2, -1).indices.sort(-1).values)
        assert r.frequency().sum() == pytest.approx(1.0)
    assert routing_shift(routing, capture_routing(model, IDS)) == {
        "routing_changed": 0.0, "router_kl": 0.0, "expert_load_shift": 0.0}
    assert capture_routing(tiny_model("llama"), IDS) == []


def test_quantization_shifts_routing(tmp_path):
    model = tiny_model("mixtral")
    base = capture_routing(model, IDS)
    ctx = make_context(as_patient(model, "mixtral"), tmp_path, samples=2, seq_len=16)
    apply_modification(QuantizeSpec(method="rtn", bits=2), ctx)
    shift = routing_shift(base, capture_routing(model, IDS))
    ctx.undo.restore()
    assert 0 < shift["routing_changed"] <= 1 and shift["router_kl"] > 0 and 0 < shift["expert_load_shift"] <= 1


def test_the_least_routed_expert_goes_and_tokens_not_routed_to_it_keep_their_output(tmp_path):
    """Mixtral renormalises the chosen experts' weights among themselves, so a token that never chose the
    removed expert gets exactly the same MoE output in the first layer."""
    model = tiny_model("mixtral")
    block = decoder_layers(model)[0]
    outputs = []
    block.mlp.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach().reshape(-1, out.shape[-1])))
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    patient = as_patient(model, "mixtral")
    ctx = make_context(patient, tmp_path, samples=4, seq_len=32)
    calibration = capture_routing(model, ctx.calibration(None).windows)
    applied = apply_prune_experts(_spec(), ctx)
    removed = applied.realized["experts_removed"]["0"]
    counts = torch.bincount(calibration[0].chosen.flatten(), minlength=4)
    assert len(removed) == 1 and counts[removed[0]] == counts.min()
    assert len(block.mlp.experts) == 3 and block.mlp.gate.weight.shape[0] == 3 and model.config.num_local_experts == 3
    outputs.clear()
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    after = outputs[0]
    ctx.undo.restore()
    outputs.clear()
    base_routing = capture_routing(model, IDS)[0]
    before = outputs[0]
    untouched = ~(base_routing.chosen == removed[0]).any(-1)
    assert untouched.any() and (~untouched).any()
    torch.testing.assert_close(after[untouched], before[untouched], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after[~untouched], before[~untouched])
    state = model.state_dict()
    assert state.keys() == before_state.keys() and all(torch.equal(state[k], before_state[k]) for k in state)
    assert model.config.to_dict() == config


@pytest.mark.parametrize("arch", ["qwen2_moe", "jamba"])
def test_expert_pruning_on_other_moe_layouts_restores(arch, tmp_path):
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    ctx = make_context(as_patient(model, arch), tmp_path, samples=2, seq_len=16)
    applied = apply_prune_experts(_spec(fraction=0.5, count=None), ctx)
    assert applied.realized["experts_removed_per_layer"] == 2 and applied.realized["params_ratio"] < 1
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=IDS, use_cache=False).logits).all()
    ctx.undo.restore()
    state = model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in state)
    assert model.config.to_dict() == config


def test_expert_pruning_is_refused_where_it_cannot_apply(tmp_path):
    ctx = make_context(as_patient(tiny_model("llama"), "llama"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(ModificationError, match="^unsupported: expert pruning: .* no mixture-of-experts"):
        apply_prune_experts(_spec(), ctx)
    ctx = make_context(as_patient(tiny_model("mixtral"), "mixtral"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(ModificationError, match="fewer than the 2 each token is routed to"):
        apply_prune_experts(_spec(count=3), ctx)
    ctx.undo.restore()
