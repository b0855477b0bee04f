"""doctor_noise: a `noise` modification kind and a `weight_rms` metric group for model-doctor.

Installed, it adds both through entry points (see pyproject.toml); nothing in model-doctor changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from doctor.metrics.registry import MetricGroup, MetricKey
from doctor.modifications.registry import NO_COMPRESSION, ModificationMethod
from doctor.spec.base import Spec


class NoiseSpec(Spec):
    """Seeded Gaussian noise added to every linear weight of the decoder blocks."""

    kind: Literal["noise"] = "noise"
    scale: float = Field(0.01, gt=0, le=1, description="noise std as a fraction of each weight matrix's RMS")
    seed: int = 0


def apply(spec: NoiseSpec, ctx):
    # heavy imports inside: this module is imported whenever a suite is validated
    import torch

    from doctor.compress.adapters import block_linears, decoder_layers
    from doctor.modifications.base import Applied

    generator = torch.Generator().manual_seed(spec.seed)
    for block in decoder_layers(ctx.patient.model):
        for module in block_linears(block).values():
            weight = module.weight
            ctx.undo.save_tensor(weight)  # before changing it: restore is then bit for bit
            rms = weight.detach().float().pow(2).mean().sqrt()
            noise = torch.randn(weight.shape, generator=generator) * (spec.scale * rms)
            with torch.no_grad():
                weight.add_(noise.to(weight.device, weight.dtype))
    return Applied(realized={"noise_scale": spec.scale})


METHOD = ModificationMethod(
    kind="noise",
    spec=NoiseSpec,
    apply=apply,
    summary=lambda mod: f"noise {100 * mod['scale']:g}% of RMS",
    compression=NO_COMPRESSION,  # noise does not make a model smaller
    predictor=None,  # no published data: the report says "no expectation"
    examples=({"kind": "noise", "scale": 0.05},),
)


def weight_rms(measuring) -> dict:
    """RMS of the decoder-block linear weights of the model as modified."""
    from doctor.compress.adapters import block_linears, decoder_layers
    from doctor.results import Measurement

    total = count = 0.0
    for block in decoder_layers(measuring.session.patient.model):
        for module in block_linears(block).values():
            weight = module.weight.detach().double()
            total += float(weight.pow(2).sum())
            count += weight.numel()
    return {"weight_rms": Measurement(value=(total / count) ** 0.5)}


GROUP = MetricGroup(
    name="weight_rms",
    keys=(MetricKey("weight_rms", "weight RMS", format=".5f"),),
    measure=weight_rms,
    description="RMS of the decoder-block linear weights",
)
