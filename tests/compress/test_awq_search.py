"""AWQ's batched searches against their loop formulations (upstream's), and the statistics they read."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context, tiny_llama_model

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.awq import AwqInputs, record_calls, search_batches, search_scale
from doctor.compress.awq_search import clip_search, grid_losses, loop_losses
from doctor.compress.capture import capture_layer_inputs
from doctor.compress.quantizer import awq_quantize
from doctor.modifications import apply_modification
from doctor.spec.modification import QuantizeSpec


def upstream_clip(w, x, bits, group_size, grid=20, max_shrink=0.5):
    """llm-awq `auto_clip_layer`'s loop over shrink steps, element-wise products summed per group."""
    g = group_size or w.shape[1]
    xs = x.reshape(1, x.shape[0], -1, g)
    ws = w.reshape(w.shape[0], 1, -1, g)
    org_max = ws.abs().amax(dim=-1, keepdim=True)
    best, least = org_max.clone(), torch.ones_like(org_max) * 1e9
    org_out = (xs * ws).sum(dim=-1)
    for i in range(int(max_shrink * grid)):
        max_val = org_max * (1 - i / grid)
        q = awq_quantize(torch.clamp(ws, -max_val, max_val).reshape(-1, g), bits, None, False).view_as(ws)
        err = ((xs * q).sum(dim=-1) - org_out).pow(2).mean(dim=1).view(least.shape)
        better = err < least
        least[better], best[better] = err[better], max_val[better]
    return best.squeeze(1)


@pytest.mark.parametrize(("bits", "group_size"), [(3, None), (4, 8), (2, 16)])
def test_batched_clip_search_finds_the_loops_bounds(bits, group_size) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(24, 48, generator=gen)
    x = torch.randn(300, 48, generator=gen) * torch.rand(48, generator=gen) * 3
    expected = upstream_clip(w, x, bits, group_size)
    for budget in (1, 1 << 30):  # one row per batch, and every row at once
        assert torch.equal(clip_search(w, x, bits, group_size, False, memory_budget=budget), expected)


def _tiny_layer_calls(inspect: str, samples: int = 4):
    model = tiny_llama_model(layers=1, seed=3)
    windows = torch.randint(0, 128, (samples, 32), generator=torch.Generator().manual_seed(0))
    layer = decoder_layers(model)[0]
    inputs = capture_layer_inputs(model, windows, batch_tokens=64)  # two windows per batch: several calls
    return layer, inputs, record_calls(layer, inputs, {inspect: layer.get_submodule(inspect)})[inspect]


@pytest.mark.parametrize(
    ("inspect", "names"),
    [("self_attn", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
     ("mlp", ["mlp.gate_proj", "mlp.up_proj"]), ("mlp.down_proj", ["mlp.down_proj"])],
)
def test_batched_scale_search_matches_the_loop(inspect, names) -> None:
    """Every ratio's loss as one module run per ratio gives; the same ratio and scales are chosen."""
    layer, inputs, calls = _tiny_layer_calls(inspect)
    linears = {n: block_linears(layer)[n] for n in names}
    originals = {n: m.weight.detach().clone() for n, m in linears.items()}
    stat = torch.rand(linear_weight(linears[names[0]]).shape[1], generator=torch.Generator().manual_seed(1)) + 0.05
    spec = QuantizeSpec(method="awq", bits=3, group_size=16)
    batched = search_scale(calls, linears, stat, spec)
    looped = search_scale(calls, linears, stat, spec, losses=loop_losses)
    assert batched.alpha == looped.alpha and torch.equal(batched.scale, looped.scale)
    assert batched.loss == pytest.approx(looped.loss, rel=1e-5)
    assert batched.unscaled_loss == pytest.approx(looped.unscaled_loss, rel=1e-5)
    for n, m in linears.items():
        assert torch.equal(m.weight, originals[n])  # both leave the weights as they found them


def test_grid_losses_chunked_like_one_chunk() -> None:
    layer, _, calls = _tiny_layer_calls("mlp")
    linears = {n: block_linears(layer)[n] for n in ("mlp.gate_proj", "mlp.up_proj")}
    scales = torch.rand(5, 64, generator=torch.Generator().manual_seed(2)) + 0.5

    def make(s):
        return {n: torch.stack([awq_quantize(linear_weight(m).detach() * r, 3, 16, False) / r for r in s])
                for n, m in linears.items()}

    one_at_a_time = grid_losses(calls, linears, scales, make, memory_budget=1)
    all_at_once = grid_losses(calls, linears, scales, make)
    torch.testing.assert_close(one_at_a_time, all_at_once, rtol=1e-6, atol=0)
    assert int(one_at_a_time.argmin()) == int(all_at_once.argmin())


def test_activation_means_over_all_tokens_at_once() -> None:
    """llm-awq's `get_act_scale`: one mean over the concatenated inputs, not a running mean per batch."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 300, 16, generator=gen) * 10 for _ in range(3)]
    stats = AwqInputs(16, "cpu", n_sample_token=512)
    for b in batches:
        stats.add(b)
    everything = torch.cat(batches)
    assert torch.equal(stats.mean_abs, everything.abs().view(-1, 16).mean(0))
    assert torch.equal(stats.sampled, everything.view(-1, 16)[:: 1800 // 512])  # auto_clip's [0::n // 512]


def test_search_tokens_measures_the_loss_on_the_first_windows(tiny_llama, tmp_path) -> None:
    ctx = make_context(tiny_llama, tmp_path, samples=8, seq_len=32)
    inputs = capture_layer_inputs(tiny_llama.model, ctx.calibration(None).windows, batch_tokens=64)
    assert search_batches(inputs, None) == 4 and search_batches(inputs, 64) == 1 and search_batches(inputs, 65) == 2
    try:
        full = apply_modification(QuantizeSpec(method="awq", bits=3, group_size=16), ctx)
        assert full.realized["search_tokens"] == 8 * 32
    finally:
        ctx.undo.restore()
    try:
        cheap = apply_modification(QuantizeSpec(method="awq", bits=3, group_size=16, search_tokens=40), ctx)
        assert cheap.realized["search_tokens"] == 64  # whole windows: two of 32 tokens, the first batch
        assert cheap.realized["calibration_tokens"] == 8 * 32  # means and clip search still see every token
        assert all(r <= 1.0 for s in cheap.layers for k, r in s.extra.items() if k.startswith("loss_vs_rtn:"))
    finally:
        ctx.undo.restore()
    with pytest.raises(ValueError, match="search_tokens applies only to method 'awq'"):
        QuantizeSpec(method="gptq", bits=4, search_tokens=512)


def test_first_batch_holds_the_searched_windows() -> None:
    from doctor.compress.capture import batches

    windows = torch.arange(10 * 32).view(10, 32)
    assert [b.shape[0] for b in batches(windows, 128, 40)] == [2, 4, 4]  # then 128-token batches of 4 windows
    assert [b.shape[0] for b in batches(windows, 128)] == [4, 4, 2]
    assert [b.shape[0] for b in batches(windows, 128, 10_000)] == [10]
    assert torch.equal(torch.cat(batches(windows, 128, 40)), windows)
