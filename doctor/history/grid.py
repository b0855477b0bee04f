"""Is one weight matrix on a low-bit grid? Lattice tests per group of inputs.

A weight quantized with b bits in groups of G inputs (RTN, GPTQ, AWQ, every GGUF block type) takes, in each
group, values `scale * q + offset` with integer q in a range of at most 2^b: the sorted distinct values of a
group sit on a lattice whose step is the smallest gap between them. Symmetric grids (Q4_0, Q8_0, Q6_K, GPTQ
sym) put zero on that lattice, inside +-2^(b-1) steps; an integer zero point (GPTQ/RTN asymmetric) puts zero
on it anywhere; a float offset (Q4_1, Q5_1, Q4_K: a per-block minimum) leaves it off the lattice. A float
weight fails the test at once: its smallest gap does not divide the others. The detected group size is the
largest tested one whose groups are on a lattice: merging two groups with different scales breaks it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

GROUP_SIZES = (16, 32, 64, 128)
MAX_BITS = 8
MIN_SHARE = 0.98  # of groups on a lattice: a few groups with one missing adjacent level may fail the test
ROWS = 24  # rows sampled per matrix: hundreds of groups, enough for the share, at a bounded cost


@dataclass(frozen=True)
class GridFit:
    """The finest grid a matrix lies on (None: not on any tested grid)."""

    group_size: int | None
    bits: int | None = None
    scheme: str | None = None  # "symmetric", "integer zero point" or "float offset"
    share: float = 0.0  # share of groups on the lattice at group_size
    levels: dict[int, int] = field(default_factory=dict)  # distinct values per group -> groups


def _tolerance(dtype: torch.dtype) -> float:
    # float32 dequantization is exact to ~1e-6 of a step; a half-precision copy rounds to ~1% of |w|
    return 0.02 if dtype == torch.float32 or dtype == torch.float64 else 0.15


def lattice(groups: torch.Tensor, tol: float) -> tuple[torch.Tensor, ...]:
    """Per group (rows of `groups`): on a lattice?, span in steps, distinct levels, zero on it?, |w|max in steps."""
    v, _ = torch.sort(groups.float(), dim=1)  # (n, G)
    span = v[:, -1] - v[:, 0]
    gaps = v[:, 1:] - v[:, :-1]
    distinct = gaps > span[:, None] * 1e-9
    levels = distinct.sum(1) + 1
    step = torch.where(distinct, gaps, torch.full_like(gaps, torch.inf)).amin(1)
    steps = span / step
    offsets = (v - v[:, :1]) / step[:, None]
    on = ((offsets - offsets.round()).abs().amax(1) < tol) & (steps <= 2**MAX_BITS - 1 + tol) & (levels >= 2)
    zero = v[:, 0] / step
    zero_on = (zero - zero.round()).abs() < tol
    return on, steps, levels, zero_on, v.abs().amax(1) / step


def _scheme(zero_on: torch.Tensor, reach: torch.Tensor, bits: int, tol: float) -> str:
    if float(zero_on.float().mean()) < MIN_SHARE:
        return "float offset"
    centred = reach <= 2 ** (bits - 1) + tol
    return "symmetric" if float(centred.float().mean()) >= MIN_SHARE else "integer zero point"


def _sample_rows(weight: torch.Tensor) -> torch.Tensor:
    if weight.shape[0] <= ROWS:
        return weight
    index = torch.linspace(0, weight.shape[0] - 1, ROWS).round().long()
    return weight[index]


def fit_grid(weight: torch.Tensor) -> GridFit:
    """The largest group size (of 16/32/64/128, or a whole row) at which `weight`'s groups lie on a b<=8-bit grid."""
    w = _sample_rows(weight.detach()).float()
    tol = _tolerance(weight.dtype)
    cols = w.shape[1]
    sizes = [g for g in GROUP_SIZES if cols % g == 0 and g < cols] + [cols]
    best = GridFit(group_size=None)
    for size in sizes:
        on, steps, levels, zero_on, reach = lattice(w.reshape(-1, size), tol)
        varied = levels >= 2  # a constant group (e.g. a zero scale) lies on every grid: it decides nothing
        share = float(on[varied].float().mean()) if bool(varied.any()) else 0.0
        if share < MIN_SHARE:
            if best.group_size is not None:
                break  # larger groups merge differently scaled ones: the grid was found
            continue
        span = round(float(steps[on].max()))
        bits = max(1, math.ceil(math.log2(span + 1)))
        best = GridFit(group_size=size, bits=bits, scheme=_scheme(zero_on[on], reach[on], bits, tol), share=share,
                       levels=dict(sorted(Counter(levels[on].tolist()).items())))
    return best
