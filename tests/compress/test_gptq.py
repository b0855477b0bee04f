"""GPTQ: properties of the solver and its layer-wise error against RTN on the demo model."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context, state_snapshot

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.gptq import gptq_quantize
from doctor.compress.hooks import forward_hooks
from doctor.compress.quantizer import find_params, quantize_rtn
from doctor.modifications import apply_modification
from doctor.spec.modification import QuantizeSpec


def _problem(rows: int = 12, cols: int = 40, tokens: int = 400, seed: int = 0):
    """Weights and a Hessian from correlated inputs with uneven feature scales, like real activations."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=gen) / cols**0.5 + torch.eye(cols)
    X = torch.randn(tokens, cols, generator=gen) @ mix * torch.rand(cols, generator=gen).add(0.1) * 3
    return torch.randn(rows, cols, generator=gen), 2 * X.t() @ X / tokens


def _quad_error(W, Q, H) -> float:
    delta = Q - W
    return float((delta @ H * delta).sum())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("bits", "group"), [(2, None), (3, 8), (4, 16), (3, 12)])
def test_gptq_objective_below_rtn(seed, bits, group) -> None:
    W, H = _problem(seed=seed)
    Q = gptq_quantize(W, H, bits, group, damp=0.01)
    assert _quad_error(W, Q, H) < _quad_error(W, quantize_rtn(W, bits, group, False), H)


@pytest.mark.parametrize(("group", "symmetric"), [(None, False), (8, True), (16, False), (12, False)])
def test_diagonal_hessian_reduces_to_rtn(group, symmetric) -> None:
    """With uncorrelated inputs there is no error to feed back: GPTQ is round-to-nearest."""
    W, _ = _problem()
    H = torch.diag(torch.rand(W.shape[1]) + 0.5)
    Q = gptq_quantize(W, H, 3, group, symmetric, block_size=16)
    torch.testing.assert_close(Q, quantize_rtn(W, 3, group, symmetric), rtol=0, atol=1e-6)


@pytest.mark.parametrize("group", [None, 8])
def test_lazy_blocks_are_exact(group) -> None:
    """Lazy updates change nothing where no scale is read mid-block: per channel, or groups read 'updated'."""
    W, H = _problem()
    reference = gptq_quantize(W, H, 3, group, block_size=8, group_scales="updated")
    for block in (16, 32, 128):
        other = gptq_quantize(W, H, 3, group, block_size=block, group_scales="updated")
        assert (other - reference).abs().gt(1e-5).float().mean() < 0.002


def _on_grid(Q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> bool:
    steps = Q / scale + zero
    return bool(torch.allclose(steps, steps.round(), atol=1e-4))


def test_reference_group_scales_are_read_before_the_blocks_updates() -> None:
    """Upstream reads a group's scale from W[:, i : i + g], which has not seen the current block's updates."""
    W, H = _problem(cols=12)
    # blocks of 6 split the group of columns 4-7; it starts inside block 0, so upstream reads it untouched
    Q = gptq_quantize(W, H, 3, 4, block_size=6)
    assert _on_grid(Q[:, 4:8], *find_params(W[:, 4:8], 3, False))
    updated = gptq_quantize(W, H, 3, 4, block_size=6, group_scales="updated")
    assert not _on_grid(updated[:, 4:8], *find_params(W[:, 4:8], 3, False))
    # both read group 0 from the unquantized weights; with blocks of one group they agree everywhere
    assert _on_grid(updated[:, :4], *find_params(W[:, :4], 3, False))
    torch.testing.assert_close(
        gptq_quantize(W, H, 3, 4, block_size=4), gptq_quantize(W, H, 3, 4, block_size=4, group_scales="updated")
    )
    # one block over all columns: every group reads the unquantized weights, i.e. static groups
    torch.testing.assert_close(gptq_quantize(W, H, 3, 4), gptq_quantize(W, H, 3, 4, static_groups=True))


def test_group_options_belong_to_gptq() -> None:
    with pytest.raises(ValueError, match="group_scales"):
        QuantizeSpec(method="gptq", bits=4, group_scales="updated")
    with pytest.raises(ValueError, match="true_sequential"):
        QuantizeSpec(method="rtn", bits=4, true_sequential=True)


@pytest.mark.parametrize(("bits", "group", "symmetric"), [(2, 8, False), (3, None, True), (4, 12, False), (8, 16, True)])
def test_levels_per_group(bits, group, symmetric) -> None:
    W, H = _problem()
    Q = gptq_quantize(W, H, bits, group, symmetric)
    _assert_levels(Q, bits, group or Q.shape[1])


def test_act_order_groups_follow_the_hessian_order() -> None:
    W, H = _problem()
    Q = gptq_quantize(W, H, 3, 8, act_order=True)
    perm = torch.argsort(H.diagonal(), descending=True)
    _assert_levels(Q[:, perm], 3, 8)
    unpermuted = gptq_quantize(W[:, perm], H[perm][:, perm], 3, 8)
    torch.testing.assert_close(Q, unpermuted[:, torch.argsort(perm)], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_static_groups_keep_storage_order_groups_under_act_order(seed) -> None:
    W, H = _problem(seed=seed)
    Q = gptq_quantize(W, H, 3, 8, act_order=True, static_groups=True)
    _assert_levels(Q, 3, 8)  # contiguous groups of the stored matrix, unlike plain act_order
    for g in range(0, W.shape[1], 8):  # each group's grid is RTN's grid on the unquantized weights
        rtn = quantize_rtn(W[:, g : g + 8], 3, None, False)
        scale = (rtn.max(1).values - rtn.min(1).values).clamp(min=1e-12)
        steps = (Q[:, g : g + 8] - rtn) / scale.unsqueeze(1) * 7
        torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)
    assert _quad_error(W, Q, H) < _quad_error(W, quantize_rtn(W, 3, 8, False), H)


def test_static_groups_without_feedback_are_rtn_and_need_gptq_groups() -> None:
    W, _ = _problem()
    H = torch.diag(torch.rand(W.shape[1]) + 0.5)
    Q = gptq_quantize(W, H, 3, 8, act_order=True, static_groups=True, block_size=16)
    torch.testing.assert_close(Q, quantize_rtn(W, 3, 8, False), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="static_groups"):
        QuantizeSpec(method="rtn", bits=4, group_size=32, static_groups=True)
    with pytest.raises(ValueError, match="static_groups"):
        QuantizeSpec(method="gptq", bits=4, static_groups=True)


def test_dead_inputs_are_zeroed_and_inputs_untouched() -> None:
    W, H = _problem()
    H[:, 5] = 0
    H[5, :] = 0
    W0, H0 = W.clone(), H.clone()
    Q = gptq_quantize(W, H, 4, 8)
    assert torch.equal(W, W0) and torch.equal(H, H0)
    assert torch.all(Q[:, 5] == 0) and torch.isfinite(Q).all()


def _assert_levels(Q: torch.Tensor, bits: int, group: int) -> None:
    for start in range(0, Q.shape[1], group):
        for row in Q[:, start : start + group]:
            assert len(torch.unique(row)) <= 2**bits


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_apply_gptq_on_tiny_models(fixture, static, request, tmp_path) -> None:
    patient = request.getfixturevalue(fixture)
    ctx = make_context(patient, tmp_path, samples=4, seq_len=32)
    spec = QuantizeSpec(method="gptq", bits=3, group_size=16, act_order=static, static_groups=static)
    applied = apply_modification(spec, ctx)
    assert len(applied.layers) == len(decoder_layers(patient.model))
    assert all(0 < s.rel_error < 1 for s in applied.layers)
    assert applied.realized["method"] == "gptq" and applied.realized["max_levels_per_group"] <= 8
    assert applied.realized["effective_bits"] > 3
    assert applied.calibration is not None and applied.calibration.ids_sha256
    for layer in decoder_layers(patient.model):
        for module in block_linears(layer).values():
            _assert_levels(linear_weight(module).detach()[:4], 3, 16)


def test_gptq_beats_rtn_on_every_layer_of_the_demo_model(demo_patient, tmp_path) -> None:
    """Measured independently of the solver: inputs of every linear in the final model, same X for both."""
    model = demo_patient.model
    ctx = make_context(demo_patient, tmp_path, samples=8, seq_len=256)
    original = state_snapshot(model)
    try:
        applied = apply_modification(QuantizeSpec(method="gptq", bits=3, group_size=32), ctx)
        inputs = _linear_inputs(model, ctx.calibration(None).windows)
        for index, layer in enumerate(decoder_layers(model)):
            num_gptq = num_rtn = den = 0.0
            for name, module in block_linears(layer).items():
                x = inputs[module]
                w0 = original[f"model.layers.{index}.{name}.weight"]
                ref = x @ w0.t()
                gptq = (x @ linear_weight(module).detach().t() - ref).pow(2).sum()
                rtn = (x @ quantize_rtn(w0, 3, 32, False).t() - ref).pow(2).sum()
                assert gptq < rtn, (index, name)
                num_gptq, num_rtn, den = num_gptq + gptq, num_rtn + rtn, den + ref.pow(2).sum()
            assert (num_gptq / den).sqrt() < (num_rtn / den).sqrt()
            # the solver's own report agrees with this independent measurement
            assert applied.layers[index].rel_error == pytest.approx(float((num_gptq / den).sqrt()), rel=1e-2)
    finally:
        ctx.undo.restore()


def _linear_inputs(model, windows) -> dict[torch.nn.Module, torch.Tensor]:
    chunks: dict[torch.nn.Module, list[torch.Tensor]] = {}

    def keep(module, args):
        chunks.setdefault(module, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))

    modules = [m for layer in decoder_layers(model) for m in block_linears(layer).values()]
    with torch.no_grad(), forward_hooks([(m, keep) for m in modules], pre=True):
        model(windows, use_cache=False)
    return {m: torch.cat(c) for m, c in chunks.items()}
