"""SparseGPT as a modification: the spec's pattern and calibration applied over every decoder layer through the
undo log. The algorithm (`sparsegpt_prune`) is tensor math in `doctor.compress.sparsegpt`; see there for the
method and its reference."""

from __future__ import annotations

import torch
from torch import nn

from doctor.compress.collectors import HessianCollector
from doctor.compress.sequential import GroupJob, in_features
from doctor.compress.sparsegpt import sparsegpt_prune
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.wanda import pruning_pass
from doctor.spec.modification import PruneSpec


def _collector(_name: str, module: nn.Module) -> HessianCollector:
    return HessianCollector(in_features(module), device=module.weight.device)


def apply_sparsegpt(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    """One calibrated pass over the decoder layers; errors come from the Hessians, sparsity is measured."""
    cal = ctx.calibration(spec.calibration)
    options = {"block_size": spec.block_size, "damp": spec.damp}
    if spec.structure == "nm":
        options.update(n=spec.n, m=spec.m)
    else:
        options["sparsity"] = spec.target_sparsity

    def solve(job: GroupJob) -> dict[str, torch.Tensor]:
        return {name: sparsegpt_prune(job.weight(name), stats.H, **options)[0] for name, stats in job.stats.items()}

    return pruning_pass(ctx, cal, solve, _collector, spec)
