"""Wanda: score |W| * ||X||, per-row and N:M masks, realized sparsity, calibration statistics."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context
from hypothesis import given, settings
from hypothesis import strategies as st

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.wanda import wanda_score
from doctor.modifications.prune import apply, nm_mask, row_mask
from doctor.modifications.wanda import wanda_mask
from doctor.spec.modification import PruneSpec


def test_score_and_masks_by_hand():
    W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    norm = torch.tensor([3.0, 1.0, 0.5, 2.0])
    score = wanda_score(W, norm)
    assert score.tolist() == [[3.0, 2.0, 1.5, 8.0], [12.0, 3.0, 1.0, 2.0]]
    row = wanda_mask(score, PruneSpec(method="wanda", sparsity=0.5))
    # row 0 drops its two lowest scores (1.5 at col 2, 2 at col 1); row 1 drops 1 (col 2) and 2 (col 3)
    assert row.tolist() == [[False, True, True, False], [False, False, True, True]]
    # plain magnitude would have dropped row 0's columns 0 and 1 instead: the activations change the choice
    assert wanda_mask(W.abs(), PruneSpec(method="wanda", sparsity=0.5))[0].tolist() == [True, True, False, False]
    nm = wanda_mask(score, PruneSpec(method="wanda", structure="nm", n=1, m=2))
    # 1:2 groups (cols 0-1, 2-3): row 0 (3, 2 | 1.5, 8) and row 1 (12, 3 | 1, 2) both drop cols 1 and 2
    assert nm.tolist() == [[False, True, True, False], [False, True, True, False]]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    groups=st.integers(1, 5),
    tail=st.integers(0, 3),
    nm=st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4)]),
    seed=st.integers(0, 1000),
)
def test_nm_mask_prunes_exactly_n_of_every_m(rows, groups, tail, nm, seed):
    n, m = nm
    tail = min(tail, m - 1)
    score = torch.rand(rows, groups * m + tail, generator=torch.Generator().manual_seed(seed))
    mask = nm_mask(score, n, m)
    full = mask[:, : groups * m].reshape(rows, groups, m)
    assert (full.sum(-1) == n).all()
    assert not mask[:, groups * m :].any()  # a ragged tail stays dense
    # the pruned entries are the lowest of their group
    grouped = score[:, : groups * m].reshape(rows, groups, m)
    pruned_max = grouped.masked_fill(~full, -1).amax(-1)
    kept_min = grouped.masked_fill(full, 2).amin(-1)
    assert (pruned_max <= kept_min).all()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 40), sparsity=st.floats(0.01, 0.99), seed=st.integers(0, 1000))
def test_row_mask_prunes_the_lowest_fraction_of_every_row(rows, cols, sparsity, seed):
    score = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    mask = row_mask(score, sparsity)
    assert (mask.sum(1) == int(cols * sparsity)).all()
    assert (score.masked_fill(~mask, -1).amax(1) <= score.masked_fill(mask, 2).amin(1)).all()


def _norms_on_unpruned_model(patient, windows, names) -> dict[str, torch.Tensor]:
    """||X_j|| of the inputs of layer 0's linears `names`, from hooks on the unmodified model."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    attn = decoder_layers(patient.model)[0].self_attn
    handles = [
        getattr(attn, n).register_forward_pre_hook(lambda _m, args, n=n: seen[n].append(args[0].flatten(0, -2)))
        for n in names
    ]
    try:
        with torch.no_grad():
            patient.model(input_ids=windows, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(x).pow(2).sum(0).sqrt() for n, x in seen.items()}


@pytest.mark.parametrize(
    "spec",
    [
        PruneSpec(method="wanda", sparsity=0.5),
        PruneSpec(method="wanda", structure="nm", n=2, m=4),
        PruneSpec(method="wanda", sparsity=0.5, true_sequential=True),
    ],
)
def test_layer_zero_masks_match_scores_from_calibration(tiny_llama, tmp_path, spec):
    """q/k see the same inputs either way; o_proj sees unpruned attention unless true_sequential is set."""
    ctx = make_context(tiny_llama, tmp_path)
    names = ("q_proj", "k_proj", "o_proj")
    norms = _norms_on_unpruned_model(tiny_llama, ctx.calibration(None).windows, names)
    attn = decoder_layers(tiny_llama.model)[0].self_attn
    expected = {n: wanda_mask(wanda_score(getattr(attn, n).weight.detach(), norms[n]), spec) for n in names}
    applied = apply(spec, ctx)
    for name, mask in expected.items():
        same = torch.equal(getattr(attn, name).weight == 0, mask)
        assert same != (spec.true_sequential and name == "o_proj"), name
    assert applied.calibration is not None and applied.calibration.windows == 8
    ctx.undo.restore()


def test_true_sequential_is_only_for_calibrated_unstructured_or_nm():
    with pytest.raises(ValueError, match="true_sequential"):
        PruneSpec(method="magnitude", sparsity=0.5, true_sequential=True)
    with pytest.raises(ValueError, match="true_sequential"):
        PruneSpec(method="wanda", structure="heads", sparsity=0.5, true_sequential=True)


@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2", "demo_patient"])
def test_realized_sparsity_is_measured_per_row(patient, request, tmp_path):
    patient = request.getfixturevalue(patient)
    ctx = make_context(patient, tmp_path)
    applied = apply(PruneSpec(method="wanda", sparsity=0.3), ctx)
    try:
        zeros = total = 0
        for block in decoder_layers(patient.model):
            for module in block_linears(block).values():
                w = linear_weight(module)
                assert ((w == 0).sum(1) == int(w.shape[1] * 0.3)).all()
                zeros, total = zeros + int((w == 0).sum()), total + w.numel()
        assert applied.realized["sparsity"] == pytest.approx(zeros / total)
        assert applied.realized["target_sparsity"] == 0.3
        assert len(applied.layers) == len(decoder_layers(patient.model))
        assert all(s.rel_error is not None and 0 < s.rel_error < 1 and s.sparsity > 0.25 for s in applied.layers)
    finally:
        ctx.undo.restore()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_holds_in_every_group_of_every_linear(demo_patient, tmp_path, n, m):
    ctx = make_context(demo_patient, tmp_path, samples=4, seq_len=32)
    applied = apply(PruneSpec(method="wanda", structure="nm", n=n, m=m), ctx)
    try:
        for block in decoder_layers(demo_patient.model):
            for name, module in block_linears(block).items():
                w = linear_weight(module)
                full = w.shape[1] - w.shape[1] % m
                zeros = (w[:, :full] == 0).reshape(w.shape[0], -1, m).sum(-1)
                assert (zeros == n).all(), name
                assert (w[:, full:] != 0).all(), name  # 172 inputs with m=8: the last 4 stay dense
        assert applied.realized["sparsity"] <= n / m
    finally:
        ctx.undo.restore()
