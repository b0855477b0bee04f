"""Expert merging (MC-SMoE): the least-routed experts of each MoE layer are folded, neuron-aligned and weighted
by routing frequency, into the kept expert whose router logits are most similar; restore is exact."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.architectures.moe import Expert, SplitExperts
from doctor.architectures.routing import capture_routing
from doctor.compress.adapters import decoder_layers
from doctor.modifications import apply_modification
from doctor.modifications.base import UndoLog
from doctor.modifications.coverage import prepare_targets
from doctor.modifications.expert_merge import alignment, merge_group, similarity
from doctor.modifications.kinds.merge_experts import MergeExpertsSpec
from tests.conftest import as_patient, make_context, state_snapshot


def _expert(seed: int, hidden: int = 16, inter: int = 24) -> Expert:
    g = torch.Generator().manual_seed(seed)
    return Expert(torch.randn(2 * inter, hidden, generator=g), torch.randn(hidden, inter, generator=g), torch.nn.SiLU())


def _shuffled(expert: Expert, order: torch.Tensor) -> Expert:
    gate, up = expert.gate_up_proj.weight.detach().chunk(2)
    return Expert(torch.cat([gate[order], up[order]]), expert.down_proj.weight.detach()[:, order], expert.act_fn)


def test_alignment_undoes_a_neuron_permutation():
    """A neuron-permuted copy computes the same function; aligned, it merges back into the original exactly."""
    anchor = _expert(0)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    copy = _shuffled(anchor, order)
    x = torch.randn(5, 16)
    torch.testing.assert_close(copy(x), anchor(x))
    assert torch.equal(order[alignment(anchor, copy)], torch.arange(24))
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(merge_group([anchor, copy], half, align=True)(x), anchor(x))
    assert not torch.allclose(merge_group([anchor, copy], half, align=False)(x), anchor(x), atol=1e-3)


def test_merged_expert_is_the_frequency_weighted_average():
    a, b, c = _expert(0), _expert(1), _expert(2)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    merged = merge_group([a, b, c], weights, align=False)
    expected = 0.5 * a.gate_up_proj.weight + 0.3 * b.gate_up_proj.weight + 0.2 * c.gate_up_proj.weight
    torch.testing.assert_close(merged.gate_up_proj.weight, expected)


def test_groups_join_the_most_similar_dominant_expert():
    from doctor.modifications.expert_merge import groups_of

    share = torch.tensor([0.4, 0.05, 0.35, 0.2])
    sim = torch.tensor([[1.0, 0.1, 0.2, 0.3], [0.1, 1.0, 0.9, 0.2], [0.2, 0.9, 1.0, 0.1], [0.3, 0.2, 0.1, 1.0]])
    assert groups_of(share, sim, count=1) == {0: [0], 2: [2, 1], 3: [3]}
    assert groups_of(share, sim, count=2) == {0: [0, 3], 2: [2, 1]}


def test_weight_similarity_matches_copies():
    experts = SplitExperts([_expert(0), _expert(1), _expert(0)])
    sim = similarity(experts, None, "weights")
    assert sim[0, 2] == pytest.approx(1.0) and sim[0, 1] < 0.5 and torch.allclose(sim, sim.T)


def _experts(block) -> SplitExperts:
    owner = block.mlp if hasattr(block, "mlp") else block.feed_forward
    return owner.experts


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
@pytest.mark.parametrize("router", ["redirect", "drop"])
def test_merging_on_a_moe_and_exact_restore(arch, router, tmp_path):
    model = tiny_model(arch)
    before, config = state_snapshot(model), model.config.to_dict()
    ctx = make_context(as_patient(model, arch), tmp_path, samples=4, seq_len=32)
    # the routing the modification will see, on split copies of the same experts
    probe = UndoLog()
    prepare_targets(model, probe)
    routing = capture_routing(model, ctx.calibration(None).windows)
    originals = [list(_experts(b)) for b in decoder_layers(model)]
    sims = [similarity(_experts(decoder_layers(model)[r.layer]), r, "router-logits") for r in routing]
    probe.restore()

    applied = apply_modification(MergeExpertsSpec(count=1, router=router), ctx)
    realized = applied.realized
    assert realized["coverage"] == 1.0 and realized["experts_after"] == 3
    for r, sim, block in zip(routing, sims, decoder_layers(model), strict=True):
        merged = {int(e): k for e, k in realized["merged_into"][str(r.layer)].items()}
        share = r.frequency()
        (gone, kept), = merged.items()
        assert float(share[gone]) == float(share.min())  # the least-routed expert went
        others = [k for k in range(4) if k != gone]
        assert kept == max(others, key=lambda k: float(sim[gone, k]))  # into the most similar by router logits
        experts = _experts(block)
        if router == "redirect":
            assert len(experts) == 4 and experts[gone] is experts[kept]
            assert block.mlp.gate.weight.shape[0] == 4
        else:
            assert len(experts) == 3 and block.mlp.gate.weight.shape[0] == 3
        target = experts[kept] if router == "redirect" else experts[others.index(kept)]
        assert not torch.equal(target.down_proj.weight, originals[r.layer][kept].down_proj.weight)
        untouched = [k for k in others if k != kept][0]
        slot = untouched if router == "redirect" else others.index(untouched)
        assert torch.equal(experts[slot].down_proj.weight, originals[r.layer][untouched].down_proj.weight)
    assert realized["params_ratio"] < 1
    ids = torch.randint(3, 128, (1, 16))
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    ctx.undo.restore()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert model.config.to_dict() == config


def test_a_dense_model_cannot_merge_experts(tmp_path):
    from doctor.architectures import Unsupported

    ctx = make_context(as_patient(tiny_model("llama"), "llama"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(Unsupported, match="no mixture-of-experts layers"):
        apply_modification(MergeExpertsSpec(count=1), ctx)


def test_checkups_show_lists_the_new_options_with_defaults(tmp_path):
    from click.testing import CliRunner

    from doctor.cli import main

    suite = tmp_path / "moe.yaml"
    suite.write_text("name: moe\ncheckups:\n"
                     "  - {id: merge, modification: {kind: merge_experts, count: 1}}\n"
                     "  - {id: rtn, modification: {kind: quantize, bits: 4}}\n")
    result = CliRunner().invoke(main, ["checkups", "show", str(suite)])
    assert result.exit_code == 0, result.output
    for option in ("similarity=router-logits", "align=True", "router=redirect", "ssm_params=keep"):
        assert option in result.output, option
