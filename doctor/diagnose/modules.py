"""The `modules` operand: aggregates over a checkup's layers x modules cells (e.g. per-module output error).

Cells come from `LayerStat.extra` keys `<stat>.<module>` (the layer probe writes `module_error.q_proj`, ...).
`by: cell` aggregates the cells themselves ("layer 3 down_proj"); `by: module` first sums each module over the
layers, to say which kind of projection carries the damage wherever it sits. `aggregate: baseline_at_max`
reads a baseline per-module statistic (`baseline: outlier_ratio`) at the cell where the statistic peaks: what
the module that breaks most receives.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from doctor.diagnose.operands import Operand


def cells(layers, stat: str) -> dict[tuple[int, str], float]:
    prefix = stat + "."
    return {(s.layer, key[len(prefix):]): float(v) for s in layers for key, v in s.extra.items()
            if key.startswith(prefix) and v is not None and math.isfinite(v)}  # fmt: skip


def cell_name(cell: tuple[int, str]) -> str:
    return f"layer {cell[0]} {cell[1]}"


class ModulesOperand(Operand):
    """An aggregate of a per-module statistic of the subject checkup, e.g. `{modules: module_error, ...}`."""

    tag: ClassVar[str] = "modules"
    needs_checkup: ClassVar[bool] = True
    modules: str = Field(min_length=1, description="the statistic: LayerStat.extra keys '<modules>.<module>'")
    by: Literal["cell", "module"] = "cell"
    aggregate: Literal["max", "count", "top_share", "baseline_at_max"] = "max"
    baseline: str | None = Field(None, description="baseline_at_max: the baseline's '<baseline>.<module>' statistic")
    k: int = Field(1, ge=1, description="top_share: how many cells or modules")
    fraction: float | None = Field(None, gt=0, le=1, description="top_share: this fraction of them instead of k")

    def _default(self) -> str:
        return f"{self.modules}_{self.by}_{self.aggregate}"

    def samples(self) -> dict[str, Any]:
        name = self.name()
        return {name: 1.0, f"{name}_names": ["layer 1 q_proj"], f"{name}_list": "layer 1 q_proj",
                f"{name}_count": 2, f"{name}_total": 1.0, f"{name}_name": "layer 1 q_proj", f"{name}_value": 1.0}  # fmt: skip

    def _baseline_at(self, scope, name: str) -> float | None:
        found = cells(scope.exam.baseline.layers, self.baseline or "")
        if self.by == "cell":
            return next((v for cell, v in found.items() if cell_name(cell) == name), None)
        return max((v for (_, module), v in found.items() if module == name), default=None)

    def _values(self, scope) -> dict[str, float]:
        found = cells(scope.subject().layers, self.modules)
        if self.by == "cell":
            ordered = sorted(found, key=lambda cell: (cell[0], cell[1]))
            return {cell_name(cell): found[cell] for cell in ordered}
        sums: dict[str, float] = {}
        for (_, module), value in found.items():
            sums[module] = sums.get(module, 0.0) + value
        return sums

    def _resolve(self, scope):
        values = self._values(scope)
        extras: dict[str, Any] = {"count": len(values), "total": math.fsum(values.values())}
        if not values:
            return (0.0 if self.aggregate == "count" else None), extras
        if self.aggregate == "count":
            return float(len(values)), extras
        ranked = sorted(values, key=lambda n: (-values[n], list(values).index(n)))
        if self.aggregate == "max":
            return values[ranked[0]], extras | {"name": ranked[0]}
        if self.aggregate == "baseline_at_max":
            return self._baseline_at(scope, ranked[0]), extras | {"name": ranked[0], "value": values[ranked[0]]}
        k = math.ceil(self.fraction * len(values)) if self.fraction else self.k
        top = ranked[:k]
        total = extras["total"]
        share = math.fsum(values[n] for n in top) / total if total > 0 else None
        return share, extras | {"names": top, "list": ", ".join(top), "name": top[0]}
