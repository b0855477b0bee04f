"""Wanda: prune by |W_ij| * ||X_j||_2, compared within each output row, no weight update.

Sun, Liu, Bair, Kolter, 2024, "A Simple and Effective Pruning Approach for Large Language Models" (ICLR),
arXiv:2306.11695; reference: locuslab/wanda `lib/prune.py` (`prune_wanda`) and `lib/layerwrapper.py`
(`WrappedGPT`). The score of weight (i, j) is its magnitude times the L2 norm of input feature j over the
calibration tokens; the comparison group is the output row (each row loses the same fraction), or for N:M
every group of m consecutive inputs of a row loses its n lowest scores (a ragged last group of r < m inputs
loses min(n, r) as in the reference, unless `nm_tail: dense`). Per row exactly int(cols * sparsity) weights go,
equal scores in column order (the reference's stable sort). On stories260k with the reference's calibration
windows, 30/50/70%, 2:4 and 4:8 give bit-identical weights (docs/methods.md).

As in the reference, every linear of a block is scored from the same (unpruned-block) inputs, and the next
block is calibrated on the pruned block's outputs; `true_sequential: true` instead scores o_proj on the outputs
of the already-pruned q/k/v, and so on (GPTQ's and SparseGPT's `--true-sequential`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from doctor.compress.adapters import block_linears, sequential_groups
from doctor.compress.collectors import InputNormCollector
from doctor.compress.masks import nm_mask, realized_sparsity, row_mask
from doctor.compress.sequential import GroupJob, in_features, run_sequential
from doctor.modifications.base import Applied, ApplyContext
from doctor.spec.modification import PruneSpec


def wanda_score(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """|W| * ||X|| broadcast over rows: weight (out, in), norm (in,) -> (out, in)."""
    return weight.abs() * norm.to(weight.device, weight.dtype).unsqueeze(0)


def wanda_mask(score: torch.Tensor, spec: PruneSpec) -> torch.Tensor:
    """True where pruned: per output row, or n of every m along the input dimension."""
    if spec.structure == "nm":
        return nm_mask(score, spec.n, spec.m, spec.nm_tail)
    return row_mask(score, spec.target_sparsity)


def pruning_pass(ctx: ApplyContext, cal, solve, make_collector, spec: PruneSpec) -> Applied:
    """The sequential pass shared by Wanda and SparseGPT, with realized sparsity per layer.

    Wanda has no Hessian to read its layer error from, so it is measured on every 8th position: the pass then
    costs about two runs of each layer (collect, re-run pruned), as in the reference implementation.
    """
    layers = run_sequential(
        ctx.patient.model, cal.windows, solve, ctx.progress, undo=ctx.undo, make_collector=make_collector,
        groups=layer_groups(spec), error_stride=8,
    )
    per_layer = realized_sparsity(ctx.patient.model)["sparsity_per_layer"]
    for stat, sparsity in zip(layers, per_layer, strict=True):
        stat.sparsity = sparsity
    return Applied(layers=layers, calibration=cal.info)


def layer_groups(spec: PruneSpec) -> Callable[[nn.Module], list[list[str]]]:
    """True-sequential groups, or one group of every linear (the whole block calibrated at once)."""
    if spec.true_sequential:
        return sequential_groups
    return lambda layer: [list(block_linears(layer))]


def _collector(_name: str, module: nn.Module) -> InputNormCollector:
    return InputNormCollector(in_features(module), device=module.weight.device)


def apply_wanda(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    """One calibrated pass over the decoder layers; each layer reports its output error and realized sparsity."""
    cal = ctx.calibration(spec.calibration)

    def solve(job: GroupJob) -> dict[str, torch.Tensor]:
        pruned = {}
        for name, stats in job.stats.items():
            w = job.weight(name)  # (out, in) float32
            pruned[name] = w.masked_fill(wanda_mask(wanda_score(w, stats.norm), spec), 0.0)
        return pruned

    return pruning_pass(ctx, cal, solve, _collector, spec)
