"""Magnitude pruning masks: exact N:M groups, per-layer sparsity, realized values measured."""

from __future__ import annotations

import pytest
import torch

from doctor.compress.masks import layer_mask, nm_mask, row_mask
from doctor.modifications import apply_modification
from doctor.spec.modification import PruneSpec
from tests.conftest import assert_bit_identical, make_context, state_snapshot


def test_nm_mask_has_exactly_n_zeros_per_group():
    torch.manual_seed(0)
    score = torch.rand(8, 64)
    for n, m in ((2, 4), (4, 8), (1, 4)):
        mask = nm_mask(score, n, m)
        assert torch.all(mask.view(8, -1, m).sum(-1) == n)
        # the pruned entries are the smallest of their group
        groups, pruned = score.view(8, -1, m), mask.view(8, -1, m)
        assert torch.all(groups.masked_fill(~pruned, -1).max(-1).values <= groups.masked_fill(pruned, 2).min(-1).values)


def test_layer_and_row_masks_hit_the_sparsity():
    score = torch.arange(100.0).view(10, 10)
    # the reference threshold: every score <= sorted[int(n * s)], i.e. one more than the fraction
    assert layer_mask(score, 0.3).sum() == 31
    assert torch.equal(layer_mask(score, 0.3).flatten()[:31], torch.ones(31, dtype=torch.bool))
    assert layer_mask(score, 0.3, "exact").sum() == 30
    assert torch.equal(layer_mask(score, 0.3, "exact").flatten()[:30], torch.ones(30, dtype=torch.bool))
    assert torch.all(row_mask(score, 0.5).sum(1) == 5)


def test_tie_rule_counts():
    """Ties at the threshold are all pruned by the reference rule; the exact rule takes them in order."""
    score = torch.tensor([[0.1, 0.5, 0.5, 0.5], [0.5, 0.9, 0.2, 0.7]])  # int(8 * 0.25) = 2: sorted[2] = 0.5
    assert layer_mask(score, 0.25).sum() == 6  # 0.1, 0.2 and all four 0.5s
    assert layer_mask(score, 0.25, "exact").tolist() == [[True, False, False, False], [False, False, True, False]]
    # Wanda's rows: exactly int(cols * s), equal scores in column order (the reference's stable sort)
    assert row_mask(torch.tensor([[0.3, 0.3, 0.3, 0.1]]), 0.5).tolist() == [[True, False, False, True]]


def test_nm_tail_of_four_eight_on_ten_columns():
    score = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    # one full group: its 4 lowest (columns 4-7); the 2-column tail loses min(4, 2) = both
    assert nm_mask(score, 4, 8).tolist() == [[False] * 4 + [True] * 4 + [True, True]]
    assert nm_mask(score, 4, 8, "dense").tolist() == [[False] * 4 + [True] * 4 + [False, False]]
    assert nm_mask(torch.tensor([[3.0, 1, 2, 0, 5, 4, 7]]), 2, 4).tolist() == [
        [False, True, False, True, True, True, False]
    ]


def test_magnitude_prune_realized_and_restored(tiny_llama, tmp_path):
    before = state_snapshot(tiny_llama.model)
    ctx = make_context(tiny_llama, tmp_path)
    applied = apply_modification(PruneSpec(method="magnitude", structure="nm", n=2, m=4), ctx)
    assert abs(applied.realized["sparsity"] - 0.5) < 1e-3
    ctx.undo.restore()
    assert_bit_identical(tiny_llama.model, before)
    applied = apply_modification(PruneSpec(method="magnitude", sparsity=0.7), ctx)
    assert abs(applied.realized["sparsity"] - 0.7) < 1e-2
    ctx.undo.restore()
    assert_bit_identical(tiny_llama.model, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_zero_masked_writes_what_masked_fill_writes(dtype):
    from doctor.compress.masks import zero_masked_

    torch.manual_seed(0)
    w = torch.randn(48, 40).to(dtype)
    special = torch.tensor([-0.0, float("nan"), float("inf"), -float("inf")]).to(dtype)
    w[0, :4] = w[1, :4] = special
    mask = torch.rand(48, 40) < 0.5
    mask[0, :4], mask[1, :4] = True, False  # specials pruned in row 0, kept in row 1
    for a, b, m in ((w.clone(), w.clone(), mask), (w.clone().t(), w.clone().t(), mask.t())):  # and a transposed view
        a.masked_fill_(m, 0.0)
        zero_masked_(b, m)
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        assert torch.equal(a.view(bits), b.view(bits))  # same bits: +0.0 where pruned, the rest untouched
