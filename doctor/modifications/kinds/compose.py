"""`kind: compose`: several modifications applied in order (e.g. Wanda 50% then GPTQ 4-bit, or 4-bit plus
sampling). Its steps may be of any registered kind, plugins included."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from doctor.modifications.registry import NO_COMPRESSION, ModificationMethod
from doctor.modifications.registry import summary as kind_summary
from doctor.spec.base import Spec


class ComposeSpec(Spec):
    """Several modifications applied in order (e.g. Wanda 50% then GPTQ 4-bit, or 4-bit plus sampling)."""

    kind: Literal["compose"] = "compose"
    steps: list[Modification] = Field(min_length=1)  # noqa: F821 - the registry's union, resolved when it is built


def flatten(spec: Spec) -> list[Spec]:
    """The leaf modifications of a spec, in application order."""
    if isinstance(spec, ComposeSpec):
        return [leaf for step in spec.steps for leaf in flatten(step)]
    return [spec]


def leaves(modification: dict[str, Any]) -> list[dict[str, Any]]:
    """The leaf modifications of a modification as stored in results.json (a dict), in application order."""
    if modification.get("kind") != "compose":
        return [modification]
    return [leaf for step in modification.get("steps") or [] if isinstance(step, dict) for leaf in leaves(step)]


def summary(mod: dict[str, Any]) -> str:
    return " → ".join(kind_summary(step) for step in mod.get("steps", []) if isinstance(step, dict))


def apply(spec: ComposeSpec, ctx) -> Any:
    """Steps in order; realized facts are kept per step and the last step's layer facts win."""
    from doctor.modifications.base import Applied
    from doctor.modifications.registry import apply_modification

    merged = Applied()
    for i, step in enumerate(spec.steps):
        applied = apply_modification(step, ctx)
        merged.realized[f"step{i}.{step.kind}"] = applied.realized
        for key, value in applied.realized.items():
            merged.realized[key] = value
        merged.layers = applied.layers or merged.layers
        merged.calibration = applied.calibration or merged.calibration
    return merged


METHOD = ModificationMethod(
    kind="compose",
    spec=ComposeSpec,
    apply=apply,
    summary=summary,
    compression=NO_COMPRESSION,  # a chain has no single level; rules read its steps' parameters
    predictor=None,  # the predictor maps each step on its own (see doctor.predict.cases)
    examples=(
        {"kind": "compose", "steps": [{"kind": "prune", "method": "wanda", "sparsity": 0.5},
                                      {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32}]},
    ),
    rank=1000,
    description=ComposeSpec.__doc__,
)
