"""Sweep operands: one number from several checkups (a bit-width or sparsity sweep, a set of strategies).

Members are the scope's checkups (all of them, or the rule's group), narrowed by `select` and, for a rule
that runs per checkup, by `same` (peers sharing the subject's parameters, e.g. the same bits and group size).
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from doctor.diagnose import aggregates as agg
from doctor.diagnose.operands import (
    CHECKUP_FIELDS,
    ORDERED,
    SWEEP_AGGREGATES,
    Operand,
    Scope,
    field_value,
    is_number,
    known_metric,
    metric_value,
)
from doctor.diagnose.selectors import Selector, checkup_params, select
from doctor.results import CheckupResult

# the locating facts each aggregate reports, which `take` may use as the value
TAKES: dict[str, tuple[str, ...]] = {
    "max_step_ratio": ("at", "before", "step", "rate", "previous_rate", "value_at", "value_before", "checkup"),
    "last_within": ("value", "checkup"),
    "first_beyond": ("value", "checkup"),
    "max": ("checkup",),
    "min": ("checkup",),
}


class SweepOperand(Operand):
    """An aggregate over selected checkups of one observation (a metric, a parameter or a record field)."""

    tag: ClassVar[str] = "sweep"
    aggregate: Literal[SWEEP_AGGREGATES]  # type: ignore[valid-type]
    metric: str | list[str] | None = Field(
        None, description="metric key, or globs: each matching key is aggregated and the largest result kept"
    )
    param: str | None = None
    realized: str | None = None

    _known = field_validator("metric")(known_metric)

    @field_validator("limit")
    @classmethod
    def _finite_limit(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("limit must be a finite number")
        return value

    field: Literal[CHECKUP_FIELDS] | None = None  # type: ignore[valid-type]
    select: Selector | None = None
    same: list[str] = Field(default_factory=list, description="parameters the members share with the subject")
    order_by: str | None = Field(None, description="parameter ordering the sweep (bits, sparsity, compression)")
    descending: bool = Field(False, description="true when a larger order_by value is milder (bits)")
    min_step: float = Field(0.01, gt=0, description="max_step_ratio: floor on the previous step's rate")
    limit: float | None = Field(None, description="last_within / first_beyond: the bound on the observation")
    take: str | None = Field(None, description="use this locating fact as the value (e.g. 'at' or 'step')")

    @model_validator(mode="after")
    def _consistent(self) -> SweepOperand:
        sources = [s for s in ("metric", "param", "realized", "field") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError("a sweep reads exactly one of: metric, param, realized, field")
        if self.aggregate in ORDERED and self.order_by is None:
            raise ValueError(f"aggregate '{self.aggregate}' needs 'order_by' (e.g. bits or sparsity)")
        if self.aggregate in ("last_within", "first_beyond") and self.limit is None:
            raise ValueError(f"aggregate '{self.aggregate}' needs 'limit'")
        if self.field is not None and self.aggregate not in ("count", "distinct"):
            raise ValueError("a record field can only be counted: use aggregate 'count' or 'distinct'")
        allowed = TAKES.get(self.aggregate, ())
        if self.take is not None and self.take not in allowed:
            known = ", ".join(allowed) or "nothing"
            raise ValueError(f"aggregate '{self.aggregate}' has no fact '{self.take}' to take; it offers: {known}")
        return self

    @property
    def source(self) -> str:
        source = next(s for s in (self.metric, self.param, self.realized, self.field) if s is not None)
        return source[0] if isinstance(source, list) else source

    def requires_checkup(self) -> bool:
        return bool(self.same)

    def _default(self) -> str:
        return f"{self.source}_{self.aggregate}" + (f"_{self.take}" if self.take else "")

    def samples(self) -> dict[str, Any]:
        name = self.name()
        out: dict[str, Any] = {name: 1.0, f"{name}_checkups": ["a", "b"], f"{name}_values": {"a": 1.0}}
        keys = ("at", "before", "step", "rate", "previous_rate", "value_at", "value_before", "value")
        out.update({f"{name}_{k}": 1.0 for k in keys})
        out.update({f"{name}_checkup": "a", f"{name}_metric": "ppl_ratio"})
        return out

    def members(self, scope: Scope) -> list[CheckupResult]:
        members = select(scope.members, self.select)
        if self.same:
            subject = checkup_params(scope.subject())
            members = [c for c in members if all(checkup_params(c).get(p) == subject.get(p) for p in self.same)]
        return members

    def _y(self, checkup: CheckupResult, metric: str | None) -> Any:
        if metric is not None:
            return metric_value(checkup, metric)
        if self.param is not None:
            return checkup_params(checkup).get(self.param)
        if self.realized is not None:
            return checkup.realized.get(self.realized)
        return field_value(checkup, self.field)

    def _resolve(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        members = self.members(scope)
        value, extras = self._best(members)
        if self.take is not None:
            value = extras.get(self.take)
        return value, extras

    def _best(self, members: list[CheckupResult]) -> tuple[Any, dict[str, Any]]:
        patterns = [self.metric] if isinstance(self.metric, str) else self.metric or []
        metrics: list[str | None] = list(patterns) or [None]
        if any(ch in p for p in patterns for ch in "*?["):
            metrics = sorted({k for c in members for k in c.metrics if any(fnmatchcase(k, p) for p in patterns)})
            if not metrics:
                return None, {"checkups": [], "values": {}, "metric": None}
        best: tuple[Any, dict[str, Any]] | None = None
        for metric in metrics:
            value, extras = self._aggregate(members, metric)
            extras["metric"] = metric
            if best is None or (is_number(value) and (not is_number(best[0]) or value > best[0])):
                best = (value, extras)
        return best  # type: ignore[return-value]

    def _aggregate(self, members: list[CheckupResult], metric: str | None) -> tuple[Any, dict[str, Any]]:
        rows = [(c, y) for c in members if (y := self._y(c, metric)) is not None]
        extras: dict[str, Any] = {"checkups": [c.id for c, _ in rows], "values": {c.id: y for c, y in rows}}
        if self.aggregate in ("count", "distinct"):
            return float(len(rows) if self.aggregate == "count" else len({str(y) for _, y in rows})), extras
        numeric = [(c, float(y)) for c, y in rows if is_number(y)]
        if self.aggregate in ORDERED:
            result = self._ordered(numeric)
            return result.value, extras | result.extras
        if self.aggregate in ("max", "min"):
            result = agg.extreme([(y, c.id) for c, y in numeric], self.aggregate)
            return result.value, extras | result.extras
        return agg.describe([y for _, y in numeric], self.aggregate), extras

    def _ordered(self, numeric: list[tuple[CheckupResult, float]]) -> agg.Result:
        points = []
        for checkup, y in numeric:
            x = checkup_params(checkup).get(self.order_by)
            if is_number(x):
                points.append((float(x), y, checkup.id))
        ordered = agg.series(points, self.descending)
        if self.aggregate == "slope":
            return agg.slope(ordered)
        if self.aggregate == "max_step_ratio":
            return agg.max_step_ratio(ordered, self.min_step)
        if self.aggregate == "last_within":
            return agg.last_within(ordered, self.limit)
        return agg.first_beyond(ordered, self.limit)

