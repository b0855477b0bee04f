"""What a weight modification touched over what it is meant to touch, by module type; and its declared scope.

Before a weight modification, `prepare_targets` asks every block's architecture adapter to make each target
weight a linear layer (fused experts are split) and records the spec's `targets:` scope on the blocks, both
through the undo log. Afterwards `coverage` counts the target weights the modification wrote (through the undo
log) or replaced, per module type (attention, mlp, experts, shared_expert, ssm), and names what was kept on
purpose. `require_full` turns anything short of full coverage into an error: a method must never quietly skip
weights it claims to have modified.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from doctor.architectures import architecture_of
from doctor.architectures.base import linear_weight
from doctor.compress.adapters import decoder_layers
from doctor.errors import ModificationError
from doctor.modifications.base import UndoLog

SCOPE_ATTR = "doctor_targets"  # names of the block's linears in scope, set for the modification's lifetime


def prepare_targets(model: nn.Module, undo: UndoLog, targets: Any = None) -> None:
    """Split fused weights into linears and narrow each block's targets to the spec's `targets:` (undoable)."""
    blocks = decoder_layers(model)
    for block in blocks:
        architecture_of(block).prepare(block, undo)
    if targets is None:
        return
    layers = None if targets.layers is None else {i % len(blocks) for i in targets.layers}
    for index, block in enumerate(blocks):
        arch = architecture_of(block)
        names = [n for n in arch.linears(block)
                 if (layers is None or index in layers)
                 and (targets.modules is None or arch.module_type(n) in targets.modules)]
        undo.set_attr(block, SCOPE_ATTR, frozenset(names))


def snapshot(model: nn.Module) -> list[dict[str, int]]:
    """Identity of every target linear per block, to tell replaced modules apart afterwards."""
    return [{n: id(m) for n, m in architecture_of(b).linears(b).items()} for b in decoder_layers(model)]


def coverage(model: nn.Module, undo: UndoLog, before: list[dict[str, int]], types: set[str] | None = None) -> dict:
    """Touched and target weights per module type; `types` limits the targets (heads: attention only)."""
    by_type: dict[str, dict[str, int]] = {}
    kept: dict[str, str] = {}
    for block, old in zip(decoder_layers(model), before, strict=True):
        arch = architecture_of(block)
        kept.update(arch.kept(block))
        for name, module in arch.linears(block).items():
            kind = arch.module_type(name)
            if types is not None and kind not in types:
                continue
            size = linear_weight(module).numel()
            entry = by_type.setdefault(kind, {"touched": 0, "target": 0})
            entry["target"] += size
            if undo.changed(module, "weight") or old.get(name) != id(module):
                entry["touched"] += size
        for param in arch.ssm_targets(block).values():  # `ssm_params: quantize`: the recurrence is a target too
            if types is not None and "ssm" not in types:
                continue
            entry = by_type.setdefault("ssm", {"touched": 0, "target": 0})
            entry["target"] += param.numel()
            entry["touched"] += param.numel() if undo.saved(param) else 0
    touched = sum(e["touched"] for e in by_type.values())
    target = sum(e["target"] for e in by_type.values())
    return {
        "coverage": touched / target if target else 0.0,
        "touched_weights": touched,
        "target_weights": target,
        "coverage_by_type": by_type,
        "kept": [f"{name}: {why}" for name, why in sorted(kept.items())],
    }


def require_full(realized: dict, what: str) -> None:
    """Raise unless every target weight was touched, naming the module types that were not."""
    if realized["target_weights"] == 0:
        raise ModificationError(f"{what}: no target weights in scope")
    if realized["touched_weights"] < realized["target_weights"]:
        short = ", ".join(
            f"{kind} {e['touched']:,} of {e['target']:,}"
            for kind, e in realized["coverage_by_type"].items() if e["touched"] < e["target"]
        )
        raise ModificationError(
            f"{what} touched {realized['touched_weights']:,} of {realized['target_weights']:,} target weights ({short})"
        )


def account(applied: Any, model: nn.Module, undo: UndoLog, before: list[dict[str, int]], what: str,
            types: set[str] | None = None) -> None:
    """Add coverage (and the count of linears calibrated on uniform fallback statistics) to `applied.realized`;
    raise if the modification fell short of its targets."""
    applied.realized.update(coverage(model, undo, before, types))
    fallback = sum(int(s.extra.get("uniform_fallback_linears", 0)) for s in applied.layers)
    if fallback:
        applied.realized["uniform_fallback_linears"] = fallback
    require_full(applied.realized, what)
