"""Wanda: prune by |W_ij| * ||X_j||_2, compared within each output row, no weight update.

Sun, Liu, Bair, Kolter, 2024, "A Simple and Effective Pruning Approach for Large Language Models" (ICLR),
arXiv:2306.11695; reference: locuslab/wanda `lib/prune.py` (`prune_wanda`) and `lib/layerwrapper.py`
(`WrappedGPT`). The score of weight (i, j) is its magnitude times the L2 norm of input feature j over the
calibration tokens; the comparison group is the output row (each row loses the same fraction), or for N:M
every group of m consecutive inputs of a row loses its n lowest scores.

As in the reference, every linear of a block is scored from the same (unpruned-block) inputs, and the next
block is calibrated on the pruned block's outputs; `true_sequential: true` instead scores o_proj on the outputs
of the already-pruned q/k/v, and so on (GPTQ's and SparseGPT's `--true-sequential`).
"""

from __future__ import annotations

import torch


def wanda_score(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """|W| * ||X|| broadcast over rows: weight (out, in), norm (in,) -> (out, in), in float32 whatever the
    weight's dtype (the reference's fp16 weight times its float32 norm promotes to float32 too)."""
    return weight.abs().float() * norm.to(weight.device, torch.float32).unsqueeze(0)
