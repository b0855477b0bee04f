"""Modification implementations, looked up lazily by `kind` so heavy imports stay off the start-up path."""

from __future__ import annotations

import importlib

from doctor.modifications.base import Applied, ApplyContext
from doctor.spec.modification import ComposeSpec, Spec

IMPLEMENTATIONS: dict[str, str] = {
    "quantize": "doctor.modifications.quantize:apply",
    "prune": "doctor.modifications.prune:apply",
    "remove_layers": "doctor.modifications.layers:apply_remove",
    "expand_layers": "doctor.modifications.layers:apply_expand",
    "decode": "doctor.modifications.decode:apply",
    "onnx": "doctor.modifications.onnx:apply",
}


def apply_modification(spec: Spec, ctx: ApplyContext) -> Applied:
    """Apply `spec` (recording every change in `ctx.undo`) and return its realized facts."""
    if isinstance(spec, ComposeSpec):
        return _apply_compose(spec, ctx)
    module_name, _, attr = IMPLEMENTATIONS[spec.kind].partition(":")
    implementation = getattr(importlib.import_module(module_name), attr)
    return implementation(spec, ctx)


def _apply_compose(spec: ComposeSpec, ctx: ApplyContext) -> Applied:
    """Steps in order; realized facts are kept per step and the last step's layer facts win."""
    merged = Applied()
    for i, step in enumerate(spec.steps):
        applied = apply_modification(step, ctx)
        merged.realized[f"step{i}.{step.kind}"] = applied.realized
        for key, value in applied.realized.items():
            merged.realized[key] = value
        merged.layers = applied.layers or merged.layers
        merged.calibration = applied.calibration or merged.calibration
    return merged
