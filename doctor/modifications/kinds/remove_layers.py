"""`kind: remove_layers`: whole decoder blocks removed (ShortGPT's Block Influence, or by position)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.formatting import percent
from doctor.modifications.registry import Compression, ModificationMethod, Unsupported, pick
from doctor.spec.base import CalibrationSpec, Spec


class RemoveLayersSpec(Spec):
    """Whole decoder blocks removed, ranked by Block Influence (ShortGPT) or by position."""

    kind: Literal["remove_layers"] = "remove_layers"
    count: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, lt=1)
    by: Literal["block_influence", "last", "first", "indices"] = "block_influence"
    indices: list[int] | None = None
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_amount(self) -> RemoveLayersSpec:
        if self.by == "indices":
            if not self.indices:
                raise ValueError("by 'indices' needs a non-empty list 'indices'")
        elif (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'count' or 'fraction'")
        return self


def summary(mod: dict[str, Any]) -> str:
    by = mod.get("by", "block_influence")
    if by == "indices":
        return f"remove layers {mod.get('indices')}"
    amount = mod.get("count") if mod.get("count") is not None else percent(mod.get("fraction"))
    return f"remove {amount} layers by {by}"


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """The removed fraction if the run reported it, else the requested fraction or count."""
    for value in (realized.get("removed_fraction"), mod.get("fraction"), mod.get("count")):
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _removed_blocks(mod: dict, realized: dict, layers: int) -> float:
    removed = pick(realized, {}, "layers_removed", "removed_layers", "removed")
    if isinstance(removed, (list, tuple)):
        return float(len(removed))
    if removed is not None:
        return float(removed)
    if mod.get("by") == "indices" and mod.get("indices"):
        return float(len(mod["indices"]))
    if mod.get("count") is not None:
        return float(mod["count"])
    if mod.get("fraction") is not None:
        return float(round(mod["fraction"] * layers))
    raise Unsupported("remove_layers without a count, fraction or indices")


def case_fields(mod: dict, realized: dict, layers: int) -> dict:
    if layers <= 0:
        raise Unsupported("remove_layers on a model with no decoder layers")
    return {"kind": "layer-removal", "method": "layer", "sparsity": _removed_blocks(mod, realized, layers) / layers}


METHOD = ModificationMethod(
    kind="remove_layers",
    spec=RemoveLayersSpec,
    apply="doctor.modifications.layers:apply_remove",
    summary=summary,
    compression=Compression("layers", level),
    predictor=case_fields,
    examples=({"kind": "remove_layers", "count": 1},),
    rank=30,
    description=RemoveLayersSpec.__doc__,
)
