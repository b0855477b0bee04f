"""Uniform affine weight quantization (round-to-nearest), per output channel or in groups along the input.

The math follows GPTQ's `quant.py` (IST-DASLab/gptq): scale = (max - min) / maxq, zero = round(-min / scale),
q = clamp(round(w / scale) + zero, 0, maxq). Symmetric mode centres the zero point. A final partial group
(e.g. 172 columns with group size 64) gets its own scale.
"""

from __future__ import annotations

import torch


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Quantize then dequantize; `scale` and `zero` broadcast against `w`."""
    q = (w / scale).round_().add_(zero).clamp_(0, maxq)  # in place: one temporary for the whole chain
    return q.sub_(zero).mul_(scale)


def find_params(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and zero for `w` (rows, cols), each shaped (rows, 1)."""
    maxq = 2**bits - 1
    low, high = torch.aminmax(w, dim=1, keepdim=True)  # one reduction for both
    zero = torch.zeros(1, dtype=w.dtype, device=w.device)
    wmin, wmax = torch.minimum(low, zero), torch.maximum(high, zero)
    if symmetric:
        wmax = torch.maximum(wmin.abs(), wmax)
        wmin = torch.where(wmin < 0, -wmax, wmin)  # upstream: a row with no negative weight keeps min 0
    same = (wmin == wmax).squeeze(1)
    wmin[same], wmax[same] = -1.0, 1.0  # an all-zero row still needs a valid scale
    scale = (wmax - wmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if symmetric else torch.round(-wmin / scale)
    return scale, zero


def _groups(w: torch.Tensor, group_size: int | None) -> list[tuple[slice, torch.Tensor]]:
    """Column ranges and their groups as rows: full groups stacked as (rows * n, g), a final partial one apart."""
    rows, cols = w.shape
    g = cols if group_size is None or group_size >= cols else group_size
    full = cols // g * g
    parts = [(slice(0, full), w[:, :full].reshape(rows * (full // g), g))]
    if full < cols:
        parts.append((slice(full, cols), w[:, full:]))
    return parts


def quantize_rtn(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest fake quantization of a (out, in) weight, computed in float32."""
    w32 = w.float()
    parts = _groups(w32, group_size)
    if len(parts) == 1:  # whole groups: the rounded groups are the result, no assembling copy
        scale, zero = find_params(parts[0][1], bits, symmetric)
        return fake_quantize(parts[0][1], scale, zero, 2**bits - 1).reshape(w32.shape).to(w.dtype)
    out = torch.empty_like(w32)
    for cols, blocks in parts:
        scale, zero = find_params(blocks, bits, symmetric)
        out[:, cols] = fake_quantize(blocks, scale, zero, 2**bits - 1).reshape(w32.shape[0], -1)
    return out.to(w.dtype)


def awq_quantize(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest as llm-awq's `pseudo_quantize_tensor`, in float32, for any leading shape of `w`.

    Unlike GPTQ's grid, the range is the group's own [min, max] (not widened to include 0), the step is at least
    1e-5 / maxq and the zero point is clamped to the grid; symmetric mode uses the levels -2^(b-1)..2^(b-1)-1.
    A final partial group (which the reference refuses) gets its own grid.
    """
    w32 = w.float().reshape(-1, w.shape[-1])
    out = torch.empty_like(w32)
    for cols, blocks in _groups(w32, group_size):
        if symmetric:
            max_int, min_int = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
            scale = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-5) / max_int
            zero = torch.zeros_like(scale)
        else:
            max_int, min_int = 2**bits - 1, 0
            low, high = torch.aminmax(blocks, dim=1, keepdim=True)
            scale = (high - low).clamp(min=1e-5) / max_int
            zero = (-torch.round(low / scale)).clamp_(min_int, max_int)
        # upstream's (clamp(round(w / scale) + zero, min, max) - zero) * scale, in place: one temporary
        q = blocks.div(scale).round_().add_(zero).clamp_(min_int, max_int).sub_(zero).mul_(scale)
        out[:, cols] = q.reshape(w32.shape[0], -1)
    return out.reshape(w.shape).to(w.dtype)


def max_levels(w: torch.Tensor, group_size: int | None, rows: int = 16) -> int:
    """Most distinct values in any group of the first `rows` rows: at most 2**bits after quantization."""
    most = 0
    for _, blocks in _groups(w[:rows].float(), group_size):
        ordered = blocks.sort(dim=1).values
        most = max(most, int(((ordered[:, 1:] != ordered[:, :-1]).sum(1) + 1).max()))
    return most


def effective_bits(bits: int, group_size: int | None, cols: int, symmetric: bool) -> float:
    """Bits per weight including 16-bit scales (and zero points when asymmetric), one set per group."""
    groups_per_row = 1 if group_size is None else -(-cols // group_size)
    per_group = 16 + (0 if symmetric else bits)
    return bits + groups_per_row * per_group / cols
