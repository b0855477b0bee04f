"""`kind: expand_layers`: copies of decoder blocks inserted (LLaMA-Pro identity init, or a naive copy)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from doctor.modifications.registry import NO_COMPRESSION, ModificationMethod
from doctor.spec.base import Spec


class ExpandLayersSpec(Spec):
    """Copies of decoder blocks inserted (LLaMA-Pro style identity init, or a naive copy)."""

    kind: Literal["expand_layers"] = "expand_layers"
    count: int = Field(1, ge=1)
    init: Literal["identity", "copy"] = "identity"
    placement: Literal["interleave", "end"] = "interleave"


def summary(mod: dict[str, Any]) -> str:
    return f"expand +{mod.get('count', 1)} layers ({mod.get('init', 'identity')}, {mod.get('placement', 'interleave')})"


METHOD = ModificationMethod(
    kind="expand_layers",
    spec=ExpandLayersSpec,
    apply="doctor.modifications.layers:apply_expand",
    summary=summary,
    compression=NO_COMPRESSION,
    predictor=None,  # growing a model has no published degradation data: no expectation
    examples=(
        {"kind": "expand_layers", "count": 2, "init": "copy"},
        {"kind": "expand_layers", "count": 1, "init": "identity"},
    ),
    rank=40,
    description=ExpandLayersSpec.__doc__,
)
