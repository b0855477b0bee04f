"""`kind: prune`: unstructured, N:M and structured (heads, channels) pruning of the decoder blocks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.formatting import percent
from doctor.modifications.registry import Compression, ModificationMethod, Unsupported
from doctor.spec.base import CalibrationSpec, Spec, TargetSpec

# Each unstructured / N:M method and the function that applies it; structured pruning ranks heads or channels by
# 'magnitude' or 'wanda' importance in its own pass.
METHODS = {
    "magnitude": "doctor.modifications.prune:apply_magnitude",
    "wanda": "doctor.modifications.wanda:apply_wanda",
    "sparsegpt": "doctor.modifications.sparsegpt:apply_sparsegpt",
}
STRUCTURED = "doctor.modifications.structured:apply_structured"


class PruneSpec(Spec):
    """Weight pruning: unstructured, N:M, or structured (attention heads / MLP channels)."""

    kind: Literal["prune"] = "prune"
    method: Literal[tuple(METHODS)] = "magnitude"
    structure: Literal["unstructured", "nm", "heads", "channels"] = "unstructured"
    sparsity: float | None = Field(None, gt=0, lt=1)
    n: int | None = Field(None, ge=1, description="N:M: zeros per group of m")
    m: int | None = Field(None, ge=2)
    damp: float = Field(0.01, gt=0, lt=1)
    block_size: int = Field(128, ge=1)
    true_sequential: bool = Field(
        False,
        description="wanda/sparsegpt: calibrate q/k/v, o, gate/up, down in turn on already-pruned outputs; "
        "default: every linear of a block from the same inputs, as both reference implementations",
    )
    head_unit: Literal["kv_group", "query"] = Field(
        "kv_group",
        description="heads: remove whole KV groups (a KV head with its query heads) or query heads within groups",
    )
    targets: TargetSpec | None = Field(None, description="unstructured and N:M only")
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_pattern(self) -> PruneSpec:
        if self.structure == "nm":
            if self.n is None or self.m is None:
                raise ValueError("structure 'nm' needs both n and m (e.g. n: 2, m: 4)")
            if self.n >= self.m:
                raise ValueError(f"n ({self.n}) must be smaller than m ({self.m})")
            if self.sparsity is not None and abs(self.sparsity - self.n / self.m) > 1e-9:
                raise ValueError(f"an {self.n}:{self.m} pattern fixes sparsity at {self.n / self.m}")
        else:
            if self.n is not None or self.m is not None:
                raise ValueError(f"n and m apply only to structure 'nm', not '{self.structure}'")
            if self.sparsity is None:
                raise ValueError(f"structure '{self.structure}' needs a sparsity in (0, 1)")
        if self.structure in ("heads", "channels") and self.method == "sparsegpt":
            raise ValueError("structured pruning ranks by 'magnitude' or 'wanda' importance, not 'sparsegpt'")
        if self.true_sequential and (self.method == "magnitude" or self.structure in ("heads", "channels")):
            raise ValueError("true_sequential applies only to wanda and sparsegpt unstructured or N:M pruning")
        if self.targets is not None and self.structure in ("heads", "channels"):
            raise ValueError("targets applies only to unstructured and N:M pruning")
        if self.head_unit != "kv_group" and self.structure != "heads":
            raise ValueError(f"head_unit applies only to structure 'heads', not '{self.structure}'")
        return self

    @property
    def target_sparsity(self) -> float:
        return self.n / self.m if self.structure == "nm" else float(self.sparsity)


def summary(mod: dict[str, Any]) -> str:
    parts = ["prune", str(mod.get("method", "magnitude"))]
    structure = mod.get("structure", "unstructured")
    if structure == "nm":
        parts.append(f"{mod.get('n')}:{mod.get('m')}")
    else:
        sparsity = mod.get("sparsity")
        parts.append(percent(float(sparsity)) if isinstance(sparsity, (int, float)) else "?")
        parts.append(str(structure))
    return " ".join(parts)


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """The requested sparsity (N:M gives n/m)."""
    if mod.get("structure") == "nm" and mod.get("n") and mod.get("m"):
        return mod["n"] / mod["m"]
    return mod.get("sparsity")


def case_fields(mod: dict, realized: dict, layers: int) -> dict:
    structure = mod.get("structure", "unstructured")
    method = str(mod.get("method", "magnitude"))
    if structure in ("heads", "channels"):
        ratio = realized.get("params_ratio")
        sparsity = 1.0 - float(ratio) if ratio is not None else mod.get("sparsity")
        kind = "structured"
    else:
        kind = "semi-structured" if structure == "nm" else "unstructured"
        sparsity = realized.get("sparsity")
        if sparsity is None:
            sparsity = mod["n"] / mod["m"] if structure == "nm" else mod.get("sparsity")
    if sparsity is None:
        raise Unsupported("prune without a sparsity")
    return {"kind": kind, "method": method, "sparsity": float(sparsity)}


METHOD = ModificationMethod(
    kind="prune",
    spec=PruneSpec,
    apply="doctor.modifications.prune:apply",
    summary=summary,
    compression=Compression("sparsity", level),
    predictor=case_fields,
    examples=(
        {"kind": "prune", "method": "magnitude", "sparsity": 0.5},
        {"kind": "prune", "method": "wanda", "structure": "nm", "n": 2, "m": 4},
        {"kind": "prune", "method": "sparsegpt", "sparsity": 0.5},
        {"kind": "prune", "method": "wanda", "structure": "heads", "sparsity": 0.25},
        {"kind": "prune", "method": "magnitude", "structure": "channels", "sparsity": 0.3},
    ),
    rank=20,
    description=PruneSpec.__doc__,
)
