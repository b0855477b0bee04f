"""Structured conditions: all / any / not over comparisons of operands, from a fixed set of operators.

Nothing here evaluates user text: a condition is a tree of Pydantic models, an operator is a name looked up
in a table. `all` and `any` evaluate every branch (no short-circuit) so the evidence is complete whichever
branch decided.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from doctor.diagnose.modules import ModulesOperand
from doctor.diagnose.operands import (
    BaselineLayersOperand,
    BaselineOperand,
    ExpectedOperand,
    FieldOperand,
    LayersOperand,
    MetricOperand,
    Operand,
    ParamOperand,
    PatientOperand,
    RealizedOperand,
    Scope,
    is_number,
)
from doctor.diagnose.selectors import Scalar
from doctor.diagnose.sweep import SweepOperand
from doctor.input.safe_regex import RegexError, compile_safe
from doctor.input.safe_regex import search as safe_search
from doctor.spec.modification import Spec

NUMERIC_OPS = ("<", "<=", ">", ">=")
BINARY_OPS = (*NUMERIC_OPS, "==", "!=", "in", "not_in", "contains", "matches")
UNARY_OPS = ("exists", "missing", "nonfinite")
OPS = BINARY_OPS + UNARY_OPS

# the key that identifies each kind of operand, tried in this order ('aggregate' marks a sweep)
_OPERAND_KEYS: dict[str, type[Operand]] = {
    "layers": LayersOperand, "baseline_layers": BaselineLayersOperand, "modules": ModulesOperand,
    "aggregate": SweepOperand,
    "expected": ExpectedOperand, "metric": MetricOperand, "param": ParamOperand, "realized": RealizedOperand,
    "field": FieldOperand, "baseline": BaselineOperand, "patient": PatientOperand,
}  # fmt: skip
OPERAND_KEYS = tuple(_OPERAND_KEYS)
TAG_PREFIXES = ("operand:", "condition:", "to:", "match:")


def _operand_tag(value: Any) -> str | None:
    if isinstance(value, Operand):
        return f"operand:{value.tag}"
    if isinstance(value, dict):
        return next((f"operand:{cls.tag}" for key, cls in _OPERAND_KEYS.items() if key in value), None)
    return None


OperandUnion = Annotated[
    Annotated[LayersOperand, Tag("operand:layers")]
    | Annotated[BaselineLayersOperand, Tag("operand:baseline_layers")]
    | Annotated[ModulesOperand, Tag("operand:modules")]
    | Annotated[SweepOperand, Tag("operand:sweep")]
    | Annotated[ExpectedOperand, Tag("operand:expected")]
    | Annotated[MetricOperand, Tag("operand:metric")]
    | Annotated[ParamOperand, Tag("operand:param")]
    | Annotated[RealizedOperand, Tag("operand:realized")]
    | Annotated[FieldOperand, Tag("operand:field")]
    | Annotated[BaselineOperand, Tag("operand:baseline")]
    | Annotated[PatientOperand, Tag("operand:patient")],
    Discriminator(
        _operand_tag,
        custom_error_type="operand",
        custom_error_message="an operand is a mapping with one of the keys: " + ", ".join(OPERAND_KEYS),
    ),
]


def _to_tag(value: Any) -> str:
    if isinstance(value, (dict, Operand)):
        return "to:operand"
    return "to:list" if isinstance(value, list) else "to:scalar"


ToValue = Annotated[
    Annotated[OperandUnion, Tag("to:operand")] | Annotated[list[Scalar], Tag("to:list")] | Annotated[Scalar, Tag("to:scalar")],
    Discriminator(_to_tag),
]


class Compare(Spec):
    """`value op to`, e.g. `{value: {metric: ppl_ratio}, op: '>', to: 1.5}`; `to` may be another operand."""

    value: OperandUnion
    op: Literal[OPS]  # type: ignore[valid-type]
    to: ToValue | None = None
    factor: float = Field(1.0, description="numeric `to` is multiplied by this (e.g. 2 x the peers' value)")

    @model_validator(mode="after")
    def _operator_fits(self) -> Compare:
        numbers = [self.factor, *(self.to if isinstance(self.to, list) else [self.to])]
        if any(is_number(v) and not math.isfinite(v) for v in numbers):
            raise ValueError("comparison values must be finite numbers (NaN compares false with everything)")
        if self.op in UNARY_OPS:
            if self.to is not None:
                raise ValueError(f"operator '{self.op}' takes no 'to'")
            return self
        if self.to is None:
            raise ValueError(f"operator '{self.op}' needs 'to'")
        if self.op in ("in", "not_in") and not isinstance(self.to, list):
            raise ValueError(f"operator '{self.op}' needs a list in 'to'")
        if self.op == "matches":
            if not isinstance(self.to, str):
                raise ValueError("operator 'matches' needs a regular expression string in 'to'")
            try:
                compile_safe(self.to)
            except RegexError as exc:
                raise ValueError(f"'to': {exc}") from None
        if self.op == "contains" and not (
            isinstance(self.to, str) or isinstance(self.to, list) and all(isinstance(t, str) for t in self.to)
        ):
            raise ValueError("operator 'contains' needs a string or a list of strings in 'to'")
        if self.op in NUMERIC_OPS and not (is_number(self.to) or isinstance(self.to, Operand)):
            raise ValueError(f"operator '{self.op}' needs a number or an operand in 'to'")
        return self

    def evaluate(self, scope: Scope) -> bool:
        left = self.value.evaluate(scope)
        right = self.to.evaluate(scope) if isinstance(self.to, Operand) else self.to
        if self.factor != 1.0 and is_number(right):
            right = right * self.factor
        return apply_op(self.op, left, right)

    def operands(self, path: tuple) -> Iterator[tuple[tuple, Operand]]:
        yield path + ("value",), self.value
        if isinstance(self.to, Operand):
            yield path + ("to",), self.to


def _equal(left: Any, right: Any) -> bool:
    if is_number(left) and is_number(right):
        return float(left) == float(right)
    return left == right


def apply_op(op: str, left: Any, right: Any) -> bool:
    """The operator table. A missing value (None) satisfies only 'missing'."""
    if op == "missing":
        return left is None
    if left is None:
        return False
    if op == "exists":
        return True
    if op == "nonfinite":
        return is_number(left) and not math.isfinite(left)
    if op in NUMERIC_OPS:
        if not (is_number(left) and is_number(right)):
            return False
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    if op in ("==", "!="):
        return _equal(left, right) == (op == "==")
    if op in ("in", "not_in"):
        return any(_equal(left, r) for r in right) == (op == "in")
    if op == "contains":
        needles = [right] if isinstance(right, str) else right
        return isinstance(left, str) and any(n.lower() in left.lower() for n in needles)
    return isinstance(left, str) and safe_search(right, left) is not None


class AllOf(Spec):
    all: list[Condition] = Field(min_length=1)

    def evaluate(self, scope: Scope) -> bool:
        results = [c.evaluate(scope) for c in self.all]
        return all(results)

    def operands(self, path: tuple) -> Iterator[tuple[tuple, Operand]]:
        for i, child in enumerate(self.all):
            yield from child.operands(path + ("all", i))


class AnyOf(Spec):
    any: list[Condition] = Field(min_length=1)

    def evaluate(self, scope: Scope) -> bool:
        results = [c.evaluate(scope) for c in self.any]
        return any(results)

    def operands(self, path: tuple) -> Iterator[tuple[tuple, Operand]]:
        for i, child in enumerate(self.any):
            yield from child.operands(path + ("any", i))


class NotOf(Spec):
    not_: Condition = Field(alias="not")

    def evaluate(self, scope: Scope) -> bool:
        return not self.not_.evaluate(scope)

    def operands(self, path: tuple) -> Iterator[tuple[tuple, Operand]]:
        yield from self.not_.operands(path + ("not",))


def _condition_tag(value: Any) -> str | None:
    if isinstance(value, (AllOf, AnyOf, NotOf, Compare)):
        return "condition:" + {AllOf: "all", AnyOf: "any", NotOf: "not", Compare: "compare"}[type(value)]
    if isinstance(value, dict):
        return next((f"condition:{tag}" for key, tag in _CONDITION_KEYS if key in value), None)
    return None


_CONDITION_KEYS = (("all", "all"), ("any", "any"), ("not", "not"), ("value", "compare"))

Condition = Annotated[
    Annotated[AllOf, Tag("condition:all")]
    | Annotated[AnyOf, Tag("condition:any")]
    | Annotated[NotOf, Tag("condition:not")]
    | Annotated[Compare, Tag("condition:compare")],
    Discriminator(
        _condition_tag,
        custom_error_type="condition",
        custom_error_message="a condition is a mapping with one of the keys: all, any, not, value",
    ),
]

for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()
