"""SparseGPT: OBS-style pruning with weight reconstruction from the calibration Hessian, block by block.

Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot" (ICML),
arXiv:2301.00774, Algorithm 1; reference: IST-DASLab/sparsegpt `sparsegpt.py` (`fasterprune`) @ 5e3e2d1.

For a linear layer with weight W (rows, cols) and H = 2 X X^T from calibration inputs (dampened by a fraction
of mean diag(H)), take the upper Cholesky factor U of H^-1. Columns are processed left to right in blocks: at
the start of each block the mask is chosen adaptively over the whole block by the OBS saliency
w^2 / [U]_jj^2 (for N:M, per group of m columns as the scan reaches it); then each column's pruning error,
scaled by 1 / [U]_jj, is fed back into the remaining columns of the block through row j of U (lazy batch
update), and the block's accumulated error into all later columns at once.

The defaults reproduce the reference: an unstructured block prunes every saliency <= the one at rank
int(numel * sparsity) of the block (`ties="exact"`: exactly that many); N:M groups are aligned to absolute columns
(the block size is rounded to a multiple of m, as it already is for the reference's 128 and m = 4 or 8), and a
ragged tail of fewer than m columns loses min(n, its size) (`nm_tail="dense"` keeps it). Like the reference, a
block's linears are calibrated together unless `true_sequential` is set. The inverse-Hessian factor is the one
GPTQ uses (`hessian.inverse_hessian_factor`, with dampening retries where the reference stops). On stories260k
with the reference's calibration windows, 30/50/70%, 2:4 and 4:8 match its perplexity to 4e-7 relative
(docs/methods.md).
"""

from __future__ import annotations

import torch

from doctor.compress.hessian import drop_dead_inputs, inverse_hessian_factor
from doctor.compress.masks import NmTail, Ties, layer_mask


def _block_mask(W1: torch.Tensor, d: torch.Tensor, sparsity: float, ties: Ties) -> torch.Tensor:
    """Adaptive unstructured mask for one block: the lowest OBS saliencies w^2 / d^2 over the whole block."""
    return layer_mask(W1.pow(2) / d.pow(2).unsqueeze(0), sparsity, ties)


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int | None = None,
    m: int | None = None,
    block_size: int = 128,
    damp: float = 0.01,
    nm_tail: NmTail = "prune",
    ties: Ties = "reference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune W (rows, cols) given H (cols, cols); returns (new float32 weight, mask of pruned entries).

    Unstructured with `sparsity`, or N:M with `n` zeros in each group of `m` consecutive columns.
    """
    W = W.float().contiguous().clone()  # GPT-2's Conv1D hands over a transposed view
    cols = W.shape[1]
    H = H.to(W.device).float().clone()
    drop_dead_inputs(W, H)  # a feature that is always zero: any weight is free, keep H invertible
    U = inverse_hessian_factor(H, damp)  # (cols, cols), upper triangular
    if n is not None:
        block_size = max(m, block_size // m * m)
    # where N:M groups may start: a ragged tail group too, unless it stays dense
    last_start = cols - 1 if nm_tail == "prune" or n is None else cols - m
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()  # (rows, block)
        U1 = U[i1:i2, i1:i2]
        d = U1.diagonal()
        mask1 = _block_mask(W1, d, sparsity, ties) if n is None else torch.zeros_like(W1, dtype=torch.bool)
        err = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if n is not None and col % m == 0 and col <= last_start:
                saliency = W1[:, i : i + m].pow(2) / d[i : i + m].pow(2).unsqueeze(0)  # (rows, <= m)
                k = min(n, saliency.shape[1])  # a ragged tail group may be shorter than n
                mask1[:, i : i + m].scatter_(1, torch.topk(saliency, k, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            err[:, i] = (w - q) / d[i]
            W1[:, i:] -= err[:, i].unsqueeze(1) * U1[i, i:].unsqueeze(0)  # OBS update of the remaining columns
            W1[:, i] = q  # exact zeros where pruned (the update leaves rounding residue)
        W[:, i1:i2] = W1
        W[:, i2:] -= err @ U[i1:i2, i2:]  # lazy batch update of every later column
        mask[:, i1:i2] = mask1
    return W, mask
