"""Operands: the observations a rule condition reads, each a small Pydantic model resolved against a scope.

Every operand records what it read as evidence under a name (`as:` or a default), plus locating facts under
`<name>_<key>` (which checkup, which layers, the bit width of a cliff), so a finding carries the exact numbers
it was based on. Values are copied from the examination unchanged; only aggregates compute anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from doctor.diagnose import aggregates as agg
from doctor.diagnose.selectors import calibration_corpus, checkup_params
from doctor.results import CheckupResult, Examination, LayerStat, ModelFacts
from doctor.spec.modification import Spec

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
CHECKUP_FIELDS = ("id", "status", "verdict", "error", "calibration", "backend", "severity", "description")
EXPECTED_FIELDS = ("point", "lower", "upper", "residual", "z", "outside", "level", "in_domain", "metric", "history",
                   "fresh_point", "fresh_lower", "fresh_upper")
LAYER_AGGREGATES = ("max", "min", "mean", "sum", "count", "argmax", "top_share")
SWEEP_AGGREGATES = (
    "count", "distinct", "max", "min", "mean", "median", "sum", "spread", "cv", "ratio",
    "slope", "max_step_ratio", "last_within", "first_beyond",
)  # fmt: skip
ORDERED = frozenset({"slope", "max_step_ratio", "last_within", "first_beyond"})


@dataclass
class Scope:
    """What a rule is looking at: the whole examination, the subject checkup (if any) and its sweep members."""

    exam: Examination
    checkup: CheckupResult | None
    members: list[CheckupResult]
    group: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)

    def subject(self) -> CheckupResult:
        if self.checkup is None:
            raise ValueError("this operand needs a checkup (for_each: checkup)")
        return self.checkup


def default_name(text: str) -> str:
    name = re.sub(r"\W", "_", text)
    return name if re.match(r"^[A-Za-z_]", name) else f"v_{name}"


class Operand(Spec):
    """Base: `as` names the evidence entry."""

    tag: ClassVar[str] = ""
    needs_checkup: ClassVar[bool] = False
    as_: str | None = Field(None, alias="as", pattern=NAME)

    def name(self) -> str:
        return self.as_ or default_name(self._default())

    def _default(self) -> str:
        raise NotImplementedError

    def requires_checkup(self) -> bool:
        return self.needs_checkup

    def samples(self) -> dict[str, Any]:
        """Evidence this operand can write, with sample values of the right type (for template checks)."""
        return {self.name(): 1.0}

    def evaluate(self, scope: Scope) -> Any:
        value, extras = self._resolve(scope)
        name = self.name()
        scope.evidence[name] = value
        for key, extra in extras.items():
            scope.evidence[f"{name}_{key}"] = extra
        return value

    def _resolve(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


def known_metric(value: Any) -> Any:
    """A rule on a metric that no checkup produces would never fire: refuse it, with a suggestion.

    Globs (`acc:*`) are accepted when they could match a metric key."""
    from fnmatch import fnmatchcase

    from doctor.spec.checkup import METRIC_KEYS, is_metric_key, unknown_metric_message

    for key in [value] if isinstance(value, str) else value or []:
        if any(ch in key for ch in "*?["):
            if ":" in key or any(fnmatchcase(k, key) for k in METRIC_KEYS):
                continue
        elif is_metric_key(key):
            continue
        raise ValueError(unknown_metric_message(key))
    return value


def metric_value(checkup: CheckupResult, key: str) -> float | None:
    measurement = checkup.metrics.get(key)
    return None if measurement is None else measurement.value


def field_value(checkup: CheckupResult, name: str) -> Any:
    return calibration_corpus(checkup) if name == "calibration" else getattr(checkup, name)


class MetricOperand(Operand):
    """A metric of the subject checkup, e.g. `{metric: ppl_ratio}`."""

    tag: ClassVar[str] = "metric"
    needs_checkup: ClassVar[bool] = True
    metric: str = Field(min_length=1)

    _known = field_validator("metric")(known_metric)

    def _default(self) -> str:
        return self.metric

    def _resolve(self, scope):
        return metric_value(scope.subject(), self.metric), {}


class ParamOperand(Operand):
    """A (flattened) modification parameter of the subject checkup, e.g. `{param: bits}`."""

    tag: ClassVar[str] = "param"
    needs_checkup: ClassVar[bool] = True
    param: str = Field(min_length=1)

    def _default(self) -> str:
        return self.param

    def _resolve(self, scope):
        return checkup_params(scope.subject()).get(self.param), {}


class RealizedOperand(Operand):
    """A realized value the modification reported, e.g. `{realized: sparsity}`."""

    tag: ClassVar[str] = "realized"
    needs_checkup: ClassVar[bool] = True
    realized: str = Field(min_length=1)

    def _default(self) -> str:
        return f"realized_{self.realized}"

    def _resolve(self, scope):
        return scope.subject().realized.get(self.realized), {}


class FieldOperand(Operand):
    """A field of the subject checkup record, e.g. `{field: error}`."""

    tag: ClassVar[str] = "field"
    needs_checkup: ClassVar[bool] = True
    field: Literal[CHECKUP_FIELDS]  # type: ignore[valid-type]

    def _default(self) -> str:
        return self.field

    def samples(self):
        return {self.name(): "text"}

    def _resolve(self, scope):
        return field_value(scope.subject(), self.field), {}


class ExpectedOperand(Operand):
    """The predictor's expectation for a metric of the subject checkup (first listed metric present)."""

    tag: ClassVar[str] = "expected"
    needs_checkup: ClassVar[bool] = True
    expected: str | list[str] = Field(description="metric key, or keys to try in order")
    field: Literal[EXPECTED_FIELDS] = "outside"  # type: ignore[valid-type]

    _known = field_validator("expected")(known_metric)

    def _default(self) -> str:
        return "expected"

    def samples(self):
        name = self.name()
        kind = {"outside": "inside", "metric": "ppl_ratio", "in_domain": True}
        out = {name: kind.get(self.field, 1.0), f"{name}_metric": "ppl_ratio", f"{name}_observed": 1.0}
        out.update({f"{name}_{k}": 1.0 for k in ("point", "lower", "upper", "level", "residual", "z")})
        out.update({f"{name}_outside": "inside", f"{name}_in_domain": True, f"{name}_history": "below"})
        out.update({f"{name}_fresh_{k}": 1.0 for k in ("point", "lower", "upper")})
        return out

    def _resolve(self, scope):
        checkup = scope.subject()
        keys = [self.expected] if isinstance(self.expected, str) else self.expected
        key = next((k for k in keys if k in checkup.expected), None)
        if key is None:
            return None, {}
        exp = checkup.expected[key]
        extras = {k: getattr(exp, k) for k in ("metric", "point", "lower", "upper", "level", "residual", "z", "outside")}
        extras.update(in_domain=exp.in_domain, observed=metric_value(checkup, key))
        if exp.history is not None:  # the patient's existing grid changed this expectation
            extras.update(history=exp.history, fresh_point=exp.fresh_point, fresh_lower=exp.fresh_lower,
                          fresh_upper=exp.fresh_upper)
        return getattr(exp, self.field), extras


class _LayerAggregate(Operand):
    aggregate: Literal[LAYER_AGGREGATES] = "max"  # type: ignore[valid-type]
    k: int = Field(2, ge=1, description="top_share: how many layers")
    fraction: float | None = Field(None, gt=0, le=1, description="top_share: this fraction of layers instead of k")

    def samples(self):
        name = self.name()
        return {name: 1.0, f"{name}_layer": 1, f"{name}_layers": [1, 2], f"{name}_range": "1-2",
                f"{name}_total": 1.0, f"{name}_count": 2, f"{name}_values": {"0": 1.0}}  # fmt: skip

    def _layers_of(self, scope: Scope) -> list[LayerStat]:
        raise NotImplementedError

    def _stat(self) -> str:
        raise NotImplementedError

    def _resolve(self, scope):
        values = {s.layer: v for s in self._layers_of(scope) if (v := layer_stat(s, self._stat())) is not None}
        extras: dict[str, Any] = {"count": len(values), "values": {str(k): v for k, v in values.items()}}
        if self.aggregate == "top_share":
            k = math.ceil(self.fraction * len(values)) if self.fraction else self.k
            result = agg.top_share(values, k)
            return result.value, extras | result.extras
        if self.aggregate == "argmax":
            return (max(values, key=values.__getitem__) if values else None), extras
        value = agg.describe(list(values.values()), self.aggregate)
        if self.aggregate in ("max", "min") and values:
            pick = max if self.aggregate == "max" else min
            extras["layer"] = pick(values, key=values.__getitem__)
        return value, extras


def layer_stat(stat: LayerStat, name: str) -> float | None:
    value = getattr(stat, name) if name in ("rel_error", "sparsity", "seconds") else stat.extra.get(name)
    return None if value is None else float(value)


class LayersOperand(_LayerAggregate):
    """An aggregate of a per-layer statistic of the subject checkup, e.g. `{layers: local_error, ...}`."""

    tag: ClassVar[str] = "layers"
    needs_checkup: ClassVar[bool] = True
    layers: str = Field(min_length=1, description="rel_error, sparsity, seconds or a key of LayerStat.extra")

    def _default(self) -> str:
        return f"{self.layers}_{self.aggregate}"

    def _stat(self) -> str:
        return self.layers

    def _layers_of(self, scope):
        return scope.subject().layers


class BaselineLayersOperand(_LayerAggregate):
    """An aggregate of a per-layer statistic of the baseline, e.g. outlier ratios."""

    tag: ClassVar[str] = "baseline_layers"
    baseline_layers: str = Field(min_length=1)

    def _default(self) -> str:
        return f"baseline_{self.baseline_layers}_{self.aggregate}"

    def _stat(self) -> str:
        return self.baseline_layers

    def _layers_of(self, scope):
        return scope.exam.baseline.layers


class BaselineOperand(Operand):
    """A baseline metric, e.g. `{baseline: ppl}`."""

    tag: ClassVar[str] = "baseline"
    baseline: str = Field(min_length=1)

    _known = field_validator("baseline")(known_metric)

    def _default(self) -> str:
        return f"baseline_{self.baseline}"

    def _resolve(self, scope):
        measurement = scope.exam.baseline.metrics.get(self.baseline)
        return (None if measurement is None else measurement.value), {}


class PatientOperand(Operand):
    """A fact about the model, e.g. `{patient: layers}`."""

    tag: ClassVar[str] = "patient"
    patient: Literal[tuple(ModelFacts.model_fields)]  # type: ignore[valid-type]

    def _default(self) -> str:
        return f"patient_{self.patient}"

    def _resolve(self, scope):
        return getattr(scope.exam.patient, self.patient), {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
