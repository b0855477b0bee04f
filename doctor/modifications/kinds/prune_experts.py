"""`kind: prune_experts`: whole experts removed from every mixture-of-experts layer, least-routed first."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.formatting import percent
from doctor.modifications.registry import Compression, ModificationMethod
from doctor.spec.base import CalibrationSpec, Spec


class PruneExpertsSpec(Spec):
    """Experts removed from every MoE layer, ranked by the share of calibration tokens routed to them."""

    kind: Literal["prune_experts"] = "prune_experts"
    count: int | None = Field(None, ge=1, description="experts removed per MoE layer")
    fraction: float | None = Field(None, gt=0, lt=1, description="fraction of each layer's experts removed")
    by: Literal["frequency"] = "frequency"
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_amount(self) -> PruneExpertsSpec:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'count' or 'fraction'")
        return self


def summary(mod: dict[str, Any]) -> str:
    amount = mod.get("count") if mod.get("count") is not None else percent(mod.get("fraction"))
    return f"prune {amount} experts per layer by routing {mod.get('by', 'frequency')}"


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """The removed fraction of each layer's experts if the run reported it, else the requested fraction or count."""
    before, removed = realized.get("experts_before"), realized.get("experts_removed_per_layer")
    if isinstance(before, int) and isinstance(removed, int) and before:
        return removed / before
    for value in (mod.get("fraction"), mod.get("count")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


METHOD = ModificationMethod(
    kind="prune_experts",
    spec=PruneExpertsSpec,
    apply="doctor.modifications.experts:apply_prune_experts",
    summary=summary,
    compression=Compression("sparsity", level),  # the fraction of experts removed
    predictor=None,  # no published degradation data for expert pruning in the training table: no expectation
    examples=({"kind": "prune_experts", "count": 1},),
    rank=35,
    needs="experts",
    description=PruneExpertsSpec.__doc__,
)
