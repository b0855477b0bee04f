"""GPTQ: layer-wise weight quantization with second-order error feedback.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023 (reference code: IST-DASLab/gptq, `gptq.py` `fasterquant`, `llama.py`).

For a linear layer with calibration inputs X, GPTQ minimises ||WX - QX||^2 column by column: each column is
rounded, and its rounding error, divided by the pivot of the inverse Hessian, is pushed onto the columns not yet
quantized. The inverse comes from the upper Cholesky factor of (H + damp * mean(diag H) I)^-1, H = 2 X X^T
(`hessian.inverse_hessian_factor`). Updates are applied lazily in blocks of `block_size` columns. Rows are
independent given H, so linears reading the same input (q/k/v, gate/up) are solved together as one stacked matrix.

The defaults reproduce the reference (`llama.py` defaults: per-layer block calibration, no act-order): on the
bundled stories260k with the same calibration windows, per-channel and g32, act-order and true-sequential on and
off, at 4 and 2 bits, perplexities agree to 1e-7 relative (per channel the weights are bit-identical; see
docs/methods.md).
Options, each recorded in `realized`:
- `act_order`: columns in order of decreasing diag(H), the permutation undone at the end; groups are then
  formed in that order (as upstream without static groups);
- `static_groups` (upstream `--static-groups`): every group's scale and zero are found up front from the
  unquantized weights of contiguous columns, so with act_order the groups stay contiguous in storage order;
- `group_scales="reference"`: a group's scale and zero are found when its first column is reached, from the
  weights as upstream reads them, `W[:, i : i + group_size]`, which carries the updates of earlier blocks but not
  yet those of the current block; `"updated"` rounds the block size to a multiple of the group size and reads
  the weights after every earlier update. Measured on stories260k it is not better (perplexity +0.2% at w4 g32,
  +0.9% at w3 g32, +2.3% at w2 g32), so it stays an option;
- `true_sequential` (upstream `--true-sequential`, applied by `doctor.modifications.gptq`): o_proj, gate/up and down_proj are
  calibrated on the outputs of the already-quantized earlier linears of the block (twice the calibration time).
Per-channel scales come from the weights before dead inputs are zeroed, as upstream.
"""

from __future__ import annotations

import torch

from doctor.compress.hessian import drop_dead_inputs, inverse_hessian_factor
from doctor.compress.quantizer import fake_quantize, find_params


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
    group_scales: str = "reference",
) -> torch.Tensor:
    """Quantized (out, in) weights, float32, for weights `W` and Hessian `H` (in, in). Inputs are not changed."""
    W = W.detach().float().clone()
    H = H.detach().float().clone()
    cols = W.shape[1]
    grouped = group_size is not None and group_size < cols
    if not grouped:
        scale, zero = find_params(W, bits, symmetric)  # upstream: before dead inputs are zeroed
    drop_dead_inputs(W, H)
    static = None
    if grouped and static_groups:
        static = [find_params(W[:, g : g + group_size], bits, symmetric) for g in range(0, cols, group_size)]
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    Hinv = inverse_hessian_factor(H, damp)
    updated = grouped and static is None and group_scales == "updated"
    if updated:
        block_size = max(group_size, block_size // group_size * group_size)
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
                source = W1[:, i : i + group_size] if updated else W[:, i1 + i : i1 + i + group_size]
                scale, zero = find_params(source, bits, symmetric)
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
