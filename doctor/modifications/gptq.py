"""GPTQ as a modification: the spec's options and calibration applied over every decoder layer through the
undo log. The algorithm (`gptq_quantize`) is tensor math in `doctor.compress.gptq`; see there for the method
and its reference."""

from __future__ import annotations

import torch

from doctor.compress import gptq
from doctor.compress.collectors import HessianCollector
from doctor.compress.sequential import GroupJob, calibration_summary, in_features, run_sequential
from doctor.modifications.base import Applied, ApplyContext
from doctor.spec.modification import QuantizeSpec


def apply_gptq(spec: QuantizeSpec, ctx: ApplyContext) -> Applied:
    """GPTQ over every decoder layer, true-sequentially, on the calibration windows of `spec.calibration`."""
    calibration = ctx.calibration(spec.calibration)

    def make_collector(_name: str, module: torch.nn.Module) -> HessianCollector:
        return HessianCollector(in_features(module), module.weight.device)

    def solve(job: GroupJob) -> dict[str, torch.Tensor]:
        # rows are independent given H, so linears sharing an input (q/k/v, gate/up) are solved as one matrix
        shared: dict[int, list[str]] = {}
        for name, stats in job.stats.items():
            shared.setdefault(id(stats), []).append(name)
        weights = {}
        for names in shared.values():
            parts = [job.weight(n) for n in names]
            Q = gptq.gptq_quantize(
                torch.cat(parts), job.stats[names[0]].H, spec.bits, spec.group_size, spec.symmetric,
                spec.act_order, spec.damp, spec.block_size, spec.static_groups,
            )
            weights.update(zip(names, torch.split(Q, [p.shape[0] for p in parts]), strict=True))
        return weights

    layers = run_sequential(
        ctx.patient.model, calibration.windows, solve, ctx.progress, undo=ctx.undo, make_collector=make_collector
    )
    realized = {
        "method": "gptq",
        "act_order": spec.act_order,
        "static_groups": spec.static_groups,
        "damp": spec.damp,
        "block_size": spec.block_size,
        **calibration_summary(layers, calibration.windows),
    }
    return Applied(realized=realized, layers=layers, calibration=calibration.info)
