"""RTN quantization: levels per group, rounding error bounds, partial final groups, symmetric mode."""

from __future__ import annotations

import pytest
import torch

from doctor.compress.quantizer import effective_bits, find_params, max_levels, quantize_rtn


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [None, 32, 64])
@pytest.mark.parametrize("symmetric", [False, True])
def test_levels_and_error_bound(bits, group_size, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(16, 172)  # 172 = the demo MLP width: not a multiple of 32 or 64
    q = quantize_rtn(w, bits, group_size, symmetric)
    g = group_size or w.shape[1]
    for start in range(0, w.shape[1], g):
        block, qblock = w[:, start : start + g], q[:, start : start + g]
        scale, _ = find_params(block, bits, symmetric)
        for row in range(w.shape[0]):
            assert qblock[row].unique().numel() <= 2**bits
        # inside the clip range the error is at most half a step
        assert torch.all((block - qblock).abs() <= scale / 2 + 1e-6)


def test_more_bits_less_error():
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    errors = [(quantize_rtn(w, b, 32, False) - w).pow(2).mean().item() for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True)


def test_partial_final_group_has_its_own_scale():
    w = torch.ones(2, 40)
    w[:, 32:] = 100.0  # the last, partial group (8 columns) has a very different range
    q = quantize_rtn(w, 4, 32, False)
    assert torch.allclose(q, w, atol=1e-4)


def test_zero_rows_stay_zero():
    w = torch.zeros(3, 64)
    assert torch.equal(quantize_rtn(w, 3, 32, True), w)


def test_effective_bits_counts_scales():
    assert effective_bits(4, None, 4096, True) == pytest.approx(4 + 16 / 4096)
    assert effective_bits(4, 128, 4096, False) == pytest.approx(4 + (16 + 4) / 128)
    assert effective_bits(4, 32, 172, True) == pytest.approx(4 + 6 * 16 / 172)


def test_max_levels_counts_distinct_values_per_group():
    torch.manual_seed(1)
    w = torch.randn(20, 100)
    q = quantize_rtn(w, 3, 32, False)
    expected = max(q[r, s : s + 32].unique().numel() for r in range(16) for s in range(0, 100, 32))
    assert max_levels(q, 32) == expected <= 8
    assert max_levels(w, 32) == 32  # unquantized: every value distinct
