"""SparseGPT: OBS-style pruning with weight reconstruction from the calibration Hessian, block by block.

Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot" (ICML),
arXiv:2301.00774, Algorithm 1; reference: IST-DASLab/sparsegpt `sparsegpt.py` (`fasterprune`) @ 5e3e2d1.

For a linear layer with weight W (rows, cols) and H = 2 X X^T from calibration inputs (dampened by a fraction
of mean diag(H)), take the upper Cholesky factor U of H^-1. Columns are processed left to right in blocks: at
the start of each block the mask is chosen adaptively over the whole block by the OBS saliency
w^2 / [U]_jj^2 (for N:M, per group of m columns as the scan reaches it); then each column's pruning error,
scaled by 1 / [U]_jj, is fed back into the remaining columns of the block through row j of U (lazy batch
update), and the block's accumulated error into all later columns at once.

Deviations from the reference: exactly int(numel * sparsity) weights per block are pruned (the reference's
`<= threshold` can take ties); N:M groups are aligned to absolute columns (the block size is rounded to a
multiple of m), and a ragged tail of fewer than m columns stays dense (see `prune.nm_mask`). Like the
reference, a block's linears are calibrated together unless `true_sequential` is set.
"""

from __future__ import annotations

import torch


def inverse_hessian_factor(H: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, and the mask of dead input features."""
    H = H.float().clone()  # (cols, cols)
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0  # a feature that is always zero: any weight is free, keep H invertible
    H.diagonal().add_(damp * H.diagonal().mean())
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True), dead


def _block_mask(W1: torch.Tensor, d: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Adaptive unstructured mask for one block: the lowest OBS saliencies w^2 / d^2 over the whole block."""
    saliency = W1.pow(2) / d.pow(2).unsqueeze(0)  # (rows, block)
    mask = torch.zeros(saliency.numel(), dtype=torch.bool, device=W1.device)
    k = int(saliency.numel() * sparsity)
    if k:
        mask[torch.topk(saliency.flatten(), k, largest=False).indices] = True
    return mask.view(saliency.shape)


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float | None = None,
    n: int | None = None,
    m: int | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune W (rows, cols) given H (cols, cols); returns (new float32 weight, mask of pruned entries).

    Unstructured with `sparsity`, or N:M with `n` zeros in each group of `m` consecutive columns.
    """
    W = W.float().contiguous().clone()  # GPT-2's Conv1D hands over a transposed view
    cols = W.shape[1]
    U, dead = inverse_hessian_factor(H.to(W.device), damp)  # U: (cols, cols), upper triangular
    W[:, dead] = 0.0
    if n is not None:
        block_size = max(m, block_size // m * m)
    complete = cols - cols % m if n is not None else cols  # last column of a complete N:M group
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()  # (rows, block)
        U1 = U[i1:i2, i1:i2]
        d = U1.diagonal()
        mask1 = _block_mask(W1, d, sparsity) if n is None else torch.zeros_like(W1, dtype=torch.bool)
        err = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if n is not None and col % m == 0 and col + m <= complete:
                saliency = W1[:, i : i + m].pow(2) / d[i : i + m].pow(2).unsqueeze(0)  # (rows, m)
                mask1[:, i : i + m].scatter_(1, torch.topk(saliency, n, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            err[:, i] = (w - q) / d[i]
            W1[:, i:] -= err[:, i].unsqueeze(1) * U1[i, i:].unsqueeze(0)  # OBS update of the remaining columns
            W1[:, i] = q  # exact zeros where pruned (the update leaves rounding residue)
        W[:, i1:i2] = W1
        W[:, i2:] -= err @ U[i1:i2, i2:]  # lazy batch update of every later column
        mask[:, i1:i2] = mask1
    return W, mask
