"""AWQ: function-preserving scaling, a search that includes the unscaled point, GQA-aware o_proj scaling."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context, state_snapshot
from transformers.models.llama.modeling_llama import repeat_kv

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight, set_linear_weight
from doctor.compress.awq import AwqInputs, record_calls, search_scale, tie_scales, untie_scales
from doctor.compress.awq_search import clip_search
from doctor.compress.capture import capture_layer_inputs
from doctor.compress.quantizer import awq_quantize, quantize_rtn
from doctor.compress.sequential import collect, in_features
from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.awq import apply_awq
from doctor.spec.modification import QuantizeSpec


def _logits(patient, windows) -> torch.Tensor:
    with torch.no_grad():
        return patient.model(windows, use_cache=False).logits.float()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2", "demo_patient"])
def test_scaling_alone_leaves_logits_unchanged(fixture, request, tmp_path) -> None:
    patient = request.getfixturevalue(fixture)
    ctx = make_context(patient, tmp_path, samples=4, seq_len=64)
    windows = ctx.calibration(None).windows
    before, snapshot = _logits(patient, windows), state_snapshot(patient.model)
    try:
        applied = apply_awq(QuantizeSpec(method="awq", bits=3, group_size=16), ctx, round_weights=False)
        after, state = _logits(patient, windows), patient.model.state_dict()
        changed = [k for k, v in snapshot.items() if not torch.equal(v, state[k])]
        assert any("norm" in k or "ln_" in k for k in changed)  # the scales really were folded
        assert any(value > 0 for s in applied.layers for k, value in s.extra.items() if k.startswith("alpha:"))
        assert (after - before).abs().max() < 1e-4
    finally:
        ctx.undo.restore()


def _layer0_group(patient, names, inspect_name, windows):
    layer = decoder_layers(patient.model)[0]
    inputs = capture_layer_inputs(patient.model, windows)
    modules = {n: block_linears(layer)[n] for n in names}
    stats = collect(layer, inputs, modules, lambda n, m: AwqInputs(in_features(m), "cpu"))
    calls = record_calls(layer, inputs, {inspect_name: layer.get_submodule(inspect_name)})[inspect_name]
    return modules, next(iter(stats.values())).mean_abs, calls


@pytest.mark.parametrize(
    ("names", "inspect_name"),
    [(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"), (("mlp.gate_proj", "mlp.up_proj"), "mlp")],
)
def test_search_includes_the_unscaled_point(demo_patient, tmp_path, names, inspect_name) -> None:
    """The chosen loss is never above plain RTN's, computed here independently on the same recorded calls."""
    windows = make_context(demo_patient, tmp_path, samples=4, seq_len=128).calibration(None).windows
    spec = QuantizeSpec(method="awq", bits=3, group_size=32)
    modules, stat, calls = _layer0_group(demo_patient, names, inspect_name, windows)
    originals = {n: m.weight.detach().clone() for n, m in modules.items()}
    result = search_scale(calls, modules, stat, spec)
    for n, m in modules.items():
        assert torch.equal(m.weight, originals[n])  # the search leaves the weights as it found them
    try:
        for m in modules.values():
            set_linear_weight(m, awq_quantize(linear_weight(m).detach(), 3, 32, False))
        rtn_loss = calls.loss()
    finally:
        with torch.no_grad():
            for n, m in modules.items():
                m.weight.copy_(originals[n])
    assert result.unscaled_loss == pytest.approx(rtn_loss, rel=1e-6)
    assert result.loss <= rtn_loss
    assert result.scale.shape == stat.shape and torch.all(result.scale > 0)


@pytest.mark.parametrize(("gqa", "groups"), [("skip", 3), ("tied", 4)])
def test_every_group_of_the_demo_model_at_most_rtn(demo_patient, tmp_path, gqa, groups) -> None:
    """The demo has 4 KV heads for 8 query heads: upstream leaves o_proj unscaled, `tied` scales it too."""
    ctx = make_context(demo_patient, tmp_path, samples=4, seq_len=128)
    try:
        applied = apply_modification(QuantizeSpec(method="awq", bits=3, group_size=32, gqa_scales=gqa), ctx)
        ratios = [v for s in applied.layers for k, v in s.extra.items() if k.startswith("loss_vs_rtn:")]
        assert len(ratios) == groups * len(applied.layers) == applied.realized["scaled_groups"]
        assert applied.realized["clipped_linears"] == 5 * len(applied.layers)  # all but q_proj and k_proj
        assert all(r <= 1.0 for r in ratios) and min(ratios) < 1.0
        assert all(0 < s.rel_error < 1 for s in applied.layers)
    finally:
        ctx.undo.restore()


def test_gqa_scales_follow_repeat_kv() -> None:
    kv_heads, n_rep, head_dim = 2, 3, 4
    value_channels = torch.arange(kv_heads * head_dim, dtype=torch.float32)
    # which value channel each o_proj input reads: repeat_kv on (batch, kv_heads, seq, head_dim)
    read = repeat_kv(value_channels.view(1, kv_heads, 1, head_dim), n_rep).reshape(-1)
    expanded = untie_scales(value_channels, kv_heads * n_rep * head_dim, head_dim)
    assert torch.equal(expanded, read)
    stats = torch.rand(kv_heads * n_rep * head_dim)
    tied = tie_scales(stats, kv_heads * head_dim, head_dim)
    for channel in range(kv_heads * head_dim):
        assert tied[channel] == pytest.approx(float(stats[read == channel].mean()))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_awq_levels_and_realized_facts(fixture, request, tmp_path) -> None:
    patient = request.getfixturevalue(fixture)
    ctx = make_context(patient, tmp_path, samples=4, seq_len=32)
    applied = apply_modification(QuantizeSpec(method="awq", bits=3, group_size=16, grid=8, gqa_scales="tied"), ctx)
    layers = decoder_layers(patient.model)
    groups_per_layer = 4 if fixture == "tiny_llama" else 3  # GPT-2's mlp.c_proj follows a GELU
    assert applied.realized["gqa_scales"] == "tied" and applied.realized["auto_clip"]
    assert applied.realized["scaled_groups"] == groups_per_layer * len(layers)
    assert applied.realized["max_levels_per_group"] <= 8 and applied.realized["effective_bits"] > 3
    assert applied.calibration is not None and applied.calibration.tokens == 4 * 32
    for layer in layers:
        for module in block_linears(layer).values():
            w = linear_weight(module).detach()
            for start in range(0, w.shape[1], 16):
                assert all(len(row.unique()) <= 8 for row in w[:, start : start + 16])


def test_unknown_blocks_are_refused(tiny_llama, tmp_path, monkeypatch) -> None:
    from doctor.architectures.llama import LlamaLike

    monkeypatch.setattr(LlamaLike, "scale_groups", lambda self, block: {})
    ctx = make_context(tiny_llama, tmp_path, samples=2, seq_len=16)
    with pytest.raises(ModificationError, match="^unsupported: AWQ"):
        apply_modification(QuantizeSpec(method="awq", bits=4), ctx)
    assert len(ctx.undo) == 0


def test_awq_grid_is_the_groups_own_range():
    """llm-awq's step is (max - min) / maxq with the zero point clamped to the grid; GPTQ's range includes 0."""
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, -0.5, 0.25, 0.5]])
    q = awq_quantize(w, 2, None, False)
    # step (4 - 1) / 3 = 1, zero -round(1 / 1) clamped to 0: levels 0..3, so 4 saturates at 3 (as upstream)
    assert q[0].tolist() == [1.0, 2.0, 3.0, 3.0]
    torch.testing.assert_close(quantize_rtn(w, 2, None, False)[0], torch.tensor([4 / 3, 8 / 3, 8 / 3, 4.0]))
    assert q[1].unique().numel() <= 4 and float(q[1].min()) == -1.0
    # a constant group: the step is clamped at 1e-5 / maxq and the clamped zero saturates it, as upstream
    torch.testing.assert_close(awq_quantize(torch.full((1, 4), 0.25), 2, None, False), torch.full((1, 4), 1e-5))


def test_clip_search_picks_the_bound_with_the_least_output_error():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=gen)
    x[:, 0] *= 0.01  # the outlier weight's input is nearly silent: clipping it costs almost nothing
    w = torch.randn(3, 8, generator=gen) * 0.1
    w[:, 0] = 5.0
    bounds = clip_search(w, x, 3, None, False)  # (rows, groups, 1)
    assert bounds.shape == (3, 1, 1)
    org = w.abs().amax(1)
    assert torch.all(bounds[:, 0, 0] < org)  # the outlier is clipped
    shrink = 1 - bounds[:, 0, 0] / org
    assert torch.allclose(shrink * 20, (shrink * 20).round(), atol=1e-4) and torch.all(shrink <= 0.45 + 1e-6)

    def error(bound):
        q = awq_quantize(torch.clamp(w, -bound, bound), 3, None, False)
        return ((x @ q.t() - x @ w.t()) ** 2).mean(0)

    for i in range(10):
        assert torch.all(error(bounds[:, :, 0]) <= error(org.unsqueeze(1) * (1 - i / 20)) + 1e-9)
