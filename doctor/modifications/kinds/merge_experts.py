"""`kind: merge_experts`: the least-routed experts of every MoE layer merged into the most similar kept expert."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.formatting import percent
from doctor.modifications.registry import Compression, ModificationMethod
from doctor.spec.base import CalibrationSpec, Spec


class MergeExpertsSpec(Spec):
    """The least-routed experts of every MoE layer merged into the most similar kept expert (MC-SMoE)."""

    kind: Literal["merge_experts"] = "merge_experts"
    count: int | None = Field(None, ge=1, description="experts merged away per MoE layer")
    fraction: float | None = Field(None, gt=0, lt=1, description="fraction of each layer's experts merged away")
    similarity: Literal["router-logits", "weights"] = Field(
        "router-logits", description="how a merged expert picks its kept expert: cosine similarity of router "
        "logits over calibration tokens (MC-SMoE) or of the weights")
    align: bool = Field(True, description="permute each member's neurons to match the kept expert before "
                        "averaging (weight matching)")
    router: Literal["redirect", "drop"] = Field(
        "redirect", description="redirect: a merged expert's tokens go to its group's expert (MC-SMoE); drop: its "
        "router row is removed and the router renormalises over the rest")
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_amount(self) -> MergeExpertsSpec:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'count' or 'fraction'")
        return self


def summary(mod: dict[str, Any]) -> str:
    amount = mod.get("count") if mod.get("count") is not None else percent(mod.get("fraction"))
    text = f"merge {amount} experts per layer by {mod.get('similarity', 'router-logits')} similarity"
    return text + (", router rows dropped" if mod.get("router") == "drop" else "")


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """The merged fraction of each layer's experts if the run reported it, else the requested fraction or count."""
    before, merged = realized.get("experts_before"), realized.get("experts_merged_per_layer")
    if isinstance(before, int) and isinstance(merged, int) and before:
        return merged / before
    for value in (mod.get("fraction"), mod.get("count")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


METHOD = ModificationMethod(
    kind="merge_experts",
    spec=MergeExpertsSpec,
    apply="doctor.modifications.expert_merge:apply_merge_experts",
    summary=summary,
    compression=Compression("sparsity", level),  # the fraction of experts merged away
    predictor=None,  # no published degradation data for expert merging in the training table: no expectation
    examples=({"kind": "merge_experts", "count": 1}, {"kind": "merge_experts", "count": 1, "router": "drop"}),
    rank=36,
    needs="experts",
    description=MergeExpertsSpec.__doc__,
)
