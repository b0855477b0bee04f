"""Wanda as a modification: the spec's pattern and calibration applied over every decoder layer through the undo
log, and the sequential pass it shares with SparseGPT. The score (`wanda_score`) is tensor math in
`doctor.compress.wanda`; see there for the method and its reference."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from doctor.compress.adapters import block_linears, sequential_groups
from doctor.compress.collectors import InputNormCollector
from doctor.compress.sequential import GroupJob, in_features, run_sequential
from doctor.compress.wanda import wanda_score
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.prune import nm_mask, realized_sparsity, row_mask
from doctor.spec.modification import PruneSpec


def wanda_mask(score: torch.Tensor, spec: PruneSpec) -> torch.Tensor:
    """True where pruned: per output row, or n of every m along the input dimension."""
    if spec.structure == "nm":
        return nm_mask(score, spec.n, spec.m)
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
