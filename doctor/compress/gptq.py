"""GPTQ: layer-wise weight quantization with second-order error feedback.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023 (reference code: IST-DASLab/gptq, `gptq.py` `fasterquant`).

For a linear layer with calibration inputs X, GPTQ minimises ||WX - QX||^2 column by column: each column is
rounded, and its rounding error, divided by the pivot of the inverse Hessian, is pushed onto the columns not yet
quantized. The inverse comes from the upper Cholesky factor of (H + damp * mean(diag H) I)^-1, H = 2 X X^T.
Updates are applied lazily in blocks of `block_size` columns (exact, only faster). Rows are independent given H,
so linears reading the same input (q/k/v, gate/up) are solved together as one stacked matrix. Options as upstream:
- dead inputs (diag H = 0) are zeroed and given a unit diagonal;
- `act_order` quantizes columns in order of decreasing diag(H), then undoes the permutation; groups are then
  formed in that order (as upstream with static groups off);
- `static_groups` (upstream `--static-groups`): every group's scale and zero are found up front from the
  unquantized weights of contiguous columns, so with act_order the groups stay contiguous in storage order
  (the layout GPTQ kernels expect) while columns are still quantized in Hessian order;
- `group_size`: scale and zero are found for a group when its first column is reached, from the weights as
  updated by the error feedback so far. Blocks are made a multiple of the group size so a group never
  straddles a block and its parameters see every earlier update (upstream reads them from the not yet
  block-updated matrix when groups are smaller than blocks). A final partial group gets its own parameters.
"""

from __future__ import annotations

import logging

import torch

from doctor.compress.quantizer import fake_quantize, find_params
from doctor.errors import NumericError

log = logging.getLogger(__name__)


def inverse_hessian_factor(H: torch.Tensor, damp: float, retries: int = 3) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1; more dampening if H is numerically singular."""
    mean_diag = float(H.diagonal().mean())
    for attempt in range(retries + 1):
        damped = H.clone()
        damped.diagonal().add_(damp * 10**attempt * mean_diag)
        L, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            if attempt:
                log.warning("Hessian not positive definite; dampening raised to %.3g", damp * 10**attempt)
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise NumericError(f"calibration Hessian is not positive definite even with dampening {damp * 10**retries}")


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = False,
    act_order: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    static_groups: bool = False,
) -> torch.Tensor:
    """Quantized (out, in) weights, float32, for weights `W` and Hessian `H` (in, in). Inputs are not changed."""
    W = W.detach().float().clone()
    H = H.detach().float().clone()
    cols = W.shape[1]
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    grouped = group_size is not None and group_size < cols
    static = None
    if grouped and static_groups:
        static = [find_params(W[:, g : g + group_size], bits, symmetric) for g in range(0, cols, group_size)]
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    Hinv = inverse_hessian_factor(H, damp)
    if grouped:
        block_size = max(group_size, block_size // group_size * group_size)
    else:
        scale, zero = find_params(W, bits, symmetric)
    maxq = 2**bits - 1
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if static is not None:
                column = int(perm[i1 + i]) if perm is not None else i1 + i
                scale, zero = static[column // group_size]
            elif grouped and (i1 + i) % group_size == 0:
                scale, zero = find_params(W1[:, i : i + group_size], bits, symmetric)
            w = W1[:, i]
            q = fake_quantize(w.unsqueeze(1), scale, zero, maxq).flatten()
            Q[:, i1 + i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q
