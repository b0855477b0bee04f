"""SparseGPT: the OBS reconstruction beats mask-only pruning at equal sparsity on the same calibration inputs."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.capture import capture_layer_inputs
from doctor.compress.collectors import InputCollector
from doctor.compress.hooks import forward_hooks
from doctor.compress.masks import layer_mask, nm_mask, row_mask
from doctor.compress.sparsegpt import sparsegpt_prune
from doctor.compress.wanda import wanda_score
from doctor.modifications.prune import apply
from doctor.spec.modification import PruneSpec


def _correlated_inputs(tokens: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    return torch.randn(tokens, cols, generator=g) @ mix * torch.linspace(0.2, 3.0, cols)  # (tokens, cols)


def _hessian(X: torch.Tensor) -> torch.Tensor:
    return 2 * X.t() @ X / X.shape[0]


def _error(X: torch.Tensor, W: torch.Tensor, W_new: torch.Tensor) -> float:
    return float((X @ (W - W_new).t()).pow(2).sum())


def test_update_lowers_the_error_of_its_own_mask():
    X = _correlated_inputs(512, 48)
    W = torch.randn(16, 48, generator=torch.Generator().manual_seed(1))
    W_new, mask = sparsegpt_prune(W, _hessian(X), sparsity=0.5, block_size=16)
    assert torch.equal(W_new == 0, mask)
    assert _error(X, W, W_new) < _error(X, W, W.masked_fill(mask, 0))


def test_pruning_the_first_column_is_the_least_squares_optimum():
    """OBS for one weight with every later weight free is exact: it must match least squares on X."""
    X = _correlated_inputs(400, 12, seed=3).double()
    w = torch.randn(1, 12, generator=torch.Generator().manual_seed(4)).double()
    w[0, 0] = 1e-3  # the lowest saliency: the one weight pruned
    W_new, mask = sparsegpt_prune(w, _hessian(X), sparsity=1 / 12, damp=1e-9, ties="exact")
    assert mask[0].tolist() == [True] + [False] * 11
    best = torch.linalg.lstsq(X[:, 1:], X @ w[0]).solution
    assert torch.allclose(W_new[0, 1:].double(), best, rtol=1e-3, atol=1e-4)


def test_tiny_sparsity_changes_nothing():
    X = _correlated_inputs(256, 24)
    W = torch.randn(8, 24)
    W_new, mask = sparsegpt_prune(W, _hessian(X), sparsity=1e-4, ties="exact")
    assert not mask.any()
    assert torch.allclose(W_new, W, atol=1e-6)
    _, mask = sparsegpt_prune(W, _hessian(X), sparsity=1e-4)  # the reference threshold takes the lowest one
    assert int(mask.sum()) == 1


@pytest.mark.parametrize("block_size", [7, 16, 128])
@pytest.mark.parametrize(("ties", "extra"), [("reference", 1), ("exact", 0)])
def test_each_block_prunes_its_share(block_size, ties, extra):
    """The reference prunes every saliency <= the one at rank int(numel * s): one more per block, without ties."""
    X = _correlated_inputs(256, 40)
    W = torch.randn(6, 40)
    _, mask = sparsegpt_prune(W, _hessian(X), sparsity=0.4, block_size=block_size, ties=ties)
    for start in range(0, 40, block_size):
        block = mask[:, start : start + block_size]
        assert int(block.sum()) == int(block.numel() * 0.4) + extra


@pytest.mark.parametrize(("n", "m", "cols"), [(2, 4, 40), (4, 8, 44), (1, 4, 12), (4, 8, 10), (2, 4, 13)])
@pytest.mark.parametrize("tail", ["prune", "dense"])
def test_nm_groups_are_exact_and_aligned(n, m, cols, tail):
    X = _correlated_inputs(256, cols)
    W = torch.randn(5, cols)
    W_new, mask = sparsegpt_prune(W, _hessian(X), n=n, m=m, block_size=10, nm_tail=tail)  # block: a multiple of m
    full = cols - cols % m
    assert ((W_new[:, :full] == 0).reshape(5, -1, m).sum(-1) == n).all()
    # a ragged tail of r < m columns: the reference prunes min(n, r) of them (4:8 on 10 columns: both)
    expected = min(n, cols - full) if tail == "prune" else 0
    assert (mask[:, full:].sum(1) == expected).all() and torch.equal(W_new == 0, mask)


def test_dead_inputs_are_zeroed_without_nans():
    X = _correlated_inputs(128, 16)
    X[:, 3] = 0
    W = torch.randn(4, 16)
    W_new, _ = sparsegpt_prune(W, _hessian(X), sparsity=0.25)
    assert torch.isfinite(W_new).all() and (W_new[:, 3] == 0).all()


def _layer_inputs(model, windows) -> list[dict[str, torch.Tensor]]:
    """Inputs (tokens, in) of every linear of every decoder layer of the unmodified model."""
    inputs = capture_layer_inputs(model, windows)
    per_layer = []
    for block in decoder_layers(model):
        linears = block_linears(block)
        collectors = {n: InputCollector(linear_weight(m).shape[1]) for n, m in linears.items()}
        hooks = [(m, lambda _m, args, c=collectors[n]: c.add(args[0])) for n, m in linears.items()]
        with forward_hooks(hooks, pre=True):
            outputs = inputs.run(block)
        per_layer.append({n: c.inputs for n, c in collectors.items()})
        inputs = inputs.with_hidden(outputs)
    return per_layer


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"n": 2, "m": 4}])
def test_beats_wanda_and_magnitude_masks_on_every_layer_of_the_demo_model(demo_patient, tmp_path, pattern):
    """Same layer inputs for all three; SparseGPT updates weights, the others only mask them."""
    model = demo_patient.model
    windows = make_context(demo_patient, tmp_path, samples=8, seq_len=64).calibration(None).windows
    for index, (block, inputs) in enumerate(zip(decoder_layers(model), _layer_inputs(model, windows), strict=True)):
        errors = {"sparsegpt": 0.0, "wanda": 0.0, "magnitude": 0.0}
        for name, module in block_linears(block).items():
            X, W = inputs[name], linear_weight(module).detach().float()
            W_sp, _ = sparsegpt_prune(W, _hessian(X), **pattern)
            score = wanda_score(W, X.pow(2).sum(0).sqrt())
            if "n" in pattern:
                masks = {"wanda": nm_mask(score, 2, 4), "magnitude": nm_mask(W.abs(), 2, 4)}
            else:
                masks = {"wanda": row_mask(score, 0.5), "magnitude": layer_mask(W.abs(), 0.5)}
            assert int((W_sp == 0).sum()) >= min(int(m.sum()) for m in masks.values())
            errors["sparsegpt"] += _error(X, W, W_sp)
            for method, mask in masks.items():
                errors[method] += _error(X, W, W.masked_fill(mask, 0))
        assert errors["sparsegpt"] < errors["wanda"], (index, errors)
        assert errors["sparsegpt"] < errors["magnitude"], (index, errors)


def test_apply_reports_layer_errors_below_wanda_and_measured_sparsity(demo_patient, tmp_path):
    ctx = make_context(demo_patient, tmp_path, samples=8, seq_len=64)
    reports = {}
    for method in ("sparsegpt", "wanda"):
        applied = apply(PruneSpec(method=method, sparsity=0.5), ctx)
        reports[method] = applied
        ctx.undo.restore()
    sparse = reports["sparsegpt"]
    assert sparse.realized["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sparse.calibration is not None and sparse.calibration.ids_sha256
    for sp, wa in zip(sparse.layers, reports["wanda"].layers, strict=True):
        assert 0 < sp.rel_error < wa.rel_error
        assert sp.sparsity == pytest.approx(0.5, abs=0.01)
