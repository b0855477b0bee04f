"""`kth_smallest` returns what `torch.kthvalue` returns, on large tensors where it takes the sampled band."""

import pytest
import torch

from doctor.compress import selection
from doctor.compress.selection import kth_smallest


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_matches_kthvalue_on_a_large_matrix(fraction):
    torch.manual_seed(0)
    x = torch.randn(700, 600).abs()
    k = max(1, min(x.numel(), int(x.numel() * fraction) + 1))
    assert torch.equal(kth_smallest(x, k), torch.kthvalue(x.flatten(), k).values)


def test_ties_and_repeated_values():
    torch.manual_seed(1)
    x = torch.randint(0, 7, (600, 600)).float()  # only seven distinct values: every band is all ties
    for k in (1, 2, 100_000, 180_000, 359_999, 360_000):
        assert torch.equal(kth_smallest(x, k), torch.kthvalue(x.flatten(), k).values)


def test_falls_back_when_the_sample_misses_the_band(monkeypatch):
    torch.manual_seed(2)
    x = torch.randn(600, 600).abs()
    top = int(x.flatten().argmax())
    # a sample of nothing but the largest value: its band cannot hold the median
    monkeypatch.setattr(selection.torch, "randint", lambda n, size, generator=None: torch.full(size, top))
    calls = []
    real = torch.kthvalue
    monkeypatch.setattr(selection.torch, "kthvalue", lambda t, k: calls.append(t.numel()) or real(t, k))
    k = x.numel() // 2
    assert torch.equal(kth_smallest(x, k), real(x.flatten(), k).values)
    assert calls == [x.numel()]


def test_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        kth_smallest(torch.ones(3), 4)
