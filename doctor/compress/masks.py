"""Pruning masks (True = pruned) and the sparsity a model actually has, as the reference implementations count.

- `nm_mask`: the `n` lowest scores of every `m` consecutive inputs of a row. With `tail="prune"` (the reference,
  locuslab/wanda `prune_wanda`/`prune_magnitude` and IST-DASLab/sparsegpt) a ragged last group of r < m columns
  loses min(n, r) of them, so e.g. a 172-input down_proj at 4:8 ends 50.28% sparse; `tail="dense"` keeps it
  whole (49.72%), the pattern N:M hardware formats can express.
- `row_mask`: per output row, the int(cols * s) lowest scores (Wanda's comparison group; the reference takes the
  first indices of a stable sort, so equal scores go in column order).
- `layer_mask`: over the whole matrix. `ties="reference"` (locuslab/wanda `prune_magnitude`, and SparseGPT per
  block) prunes every score <= the score at rank int(numel * s) of the sorted scores: int(numel * s) + 1
  weights, more when scores tie; `ties="exact"` prunes exactly int(numel * s).
"""

from __future__ import annotations

from typing import Literal

import torch

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.selection import kth_smallest
from doctor.placement.offload import materialized

NmTail = Literal["prune", "dense"]
Ties = Literal["reference", "exact"]


def nm_mask(score: torch.Tensor, n: int, m: int, tail: NmTail = "prune") -> torch.Tensor:
    """True where pruned: the `n` lowest scores in every group of `m` consecutive inputs of each row."""
    rows, cols = score.shape
    full = cols - cols % m
    mask = torch.zeros_like(score, dtype=torch.bool)
    if full:
        groups = score[:, :full].reshape(rows, full // m, m)
        idx = torch.topk(groups, n, dim=-1, largest=False).indices
        mask[:, :full] = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, full)
    if full < cols and tail == "prune":
        rest = score[:, full:]
        idx = torch.topk(rest, min(n, rest.shape[1]), dim=1, largest=False).indices
        mask[:, full:].scatter_(1, idx, True)
    return mask


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where pruned: the lowest-scoring int(cols * sparsity) of each output row, ties in column order."""
    k = int(score.shape[1] * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        idx = torch.sort(score, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, idx, True)
    return mask


def layer_mask(score: torch.Tensor, sparsity: float, ties: Ties = "reference") -> torch.Tensor:
    """True where pruned: the lowest-scoring fraction of the whole matrix (magnitude per layer, SparseGPT per block)."""
    k = int(score.numel() * sparsity)
    if ties == "reference":
        # the (k+1)-th smallest score is sorted[k]; selection is O(n) where a sort is O(n log n)
        return score <= kth_smallest(score, k + 1)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        mask[torch.sort(score.flatten(), stable=True).indices[:k]] = True
    return mask.view_as(score)


def realized_sparsity(model: torch.nn.Module) -> dict:
    """Fraction of exact zeros in the decoder-block linear weights, overall and per layer (Wanda's check)."""
    zeros = total = 0
    per_layer = []
    for block in decoder_layers(model):
        z = t = 0
        with materialized(block):
            for module in block_linears(block).values():
                w = linear_weight(module)
                z += int((w == 0).sum())
                t += w.numel()
        per_layer.append(z / t if t else 0.0)
        zeros, total = zeros + z, total + t
    return {"sparsity": zeros / total if total else 0.0, "sparsity_per_layer": per_layer}
