"""Which checkups a rule looks at: selectors over ids, modification kind and parameters, status and tags.

A selector is data (a Pydantic model); matching is plain comparison and `fnmatch` globs, never evaluation of
user text. Parameters are read from a flattened view of the modification (`checkup_params`), so a compose
checkup exposes the parameters of its steps and every compressing kind exposes a common `compression` level.
"""

from __future__ import annotations

import json
import math
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from doctor.modifications import registry
from doctor.modifications.kinds.compose import leaves
from doctor.results import CheckupResult
from doctor.spec.modification import MODIFICATION_KINDS, Spec

Scalar = bool | int | float | str


class Range(Spec):
    """An inclusive numeric range; either end may be open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs 'min' or 'max'")
        if any(v is not None and not math.isfinite(v) for v in (self.min, self.max)):
            raise ValueError("range bounds must be finite numbers (NaN matches nothing)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def _match_tag(value: Any) -> str:
    return "match:range" if isinstance(value, (dict, Range)) else "match:list" if isinstance(value, list) else "match:scalar"


# tagged by shape, so a bad range is reported once, not once per member of the union
Match = Annotated[
    Annotated[Range, Tag("match:range")] | Annotated[list[Scalar], Tag("match:list")]
    | Annotated[Scalar, Tag("match:scalar")],
    Discriminator(_match_tag),
]


def match_value(pattern: Match, value: Any) -> bool:
    """A scalar matches by equality (strings as globs), a list by membership, a range by bounds."""
    if isinstance(pattern, Range):
        return pattern.contains(value)
    if isinstance(pattern, list):
        return any(match_value(p, value) for p in pattern)
    if value is None:
        return False
    if isinstance(pattern, str):
        return isinstance(value, str) and fnmatchcase(value, pattern)
    if isinstance(pattern, bool) or isinstance(value, bool):
        return pattern is value
    if isinstance(value, (int, float)):
        return float(value) == float(pattern)
    return False


def _globs(value: str | list[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else value


class Selector(Spec):
    """Conditions on a checkup's identity and modification; every given key must match."""

    id: str | list[str] | None = Field(None, description="checkup id glob(s)")
    kind: str | list[str] | None = Field(None, description="modification kind(s) (top level; compose for chains)")
    params: dict[str, Match] = Field(default_factory=dict, description="flattened modification parameters")
    realized: dict[str, Match] = Field(default_factory=dict, description="realized values reported by the run")
    status: Literal["ok", "error"] | None = None
    verdict: Literal["pass", "fail", "error"] | list[Literal["pass", "fail", "error"]] | None = None
    tags: list[str] | None = Field(None, description="at least one of these tags")
    calibration: str | list[str] | None = Field(None, description="calibration corpus glob(s)")
    has_metric: str | list[str] | None = Field(None, description="metric key glob(s) that must be present")

    @model_validator(mode="after")
    def _known_kinds(self) -> Selector:
        for kind in _globs(self.kind) or []:
            if kind not in MODIFICATION_KINDS:
                raise ValueError(f"unknown kind '{kind}'; known: {', '.join(MODIFICATION_KINDS)}")
        return self

    def matches(self, checkup: CheckupResult) -> bool:
        return all(test(checkup) for test in self._tests())

    def _tests(self):
        if self.id is not None:
            yield lambda c: any(fnmatchcase(c.id, g) for g in _globs(self.id))
        if self.kind is not None:
            yield lambda c: c.modification.get("kind") in _globs(self.kind)
        if self.params:
            yield lambda c: _all_match(self.params, checkup_params(c))
        if self.realized:
            yield lambda c: _all_match(self.realized, c.realized)
        if self.status is not None:
            yield lambda c: c.status == self.status
        if self.verdict is not None:
            allowed = [self.verdict] if isinstance(self.verdict, str) else self.verdict
            yield lambda c: c.verdict in allowed
        if self.tags is not None:
            yield lambda c: bool(set(self.tags) & set(c.tags))
        if self.calibration is not None:
            yield lambda c: (corpus := calibration_corpus(c)) is not None and any(
                fnmatchcase(corpus, g) for g in _globs(self.calibration)
            )
        if self.has_metric is not None:
            yield lambda c: all(any(fnmatchcase(k, g) for k in c.metrics) for g in _globs(self.has_metric))


def _all_match(patterns: dict[str, Match], values: dict[str, Any]) -> bool:
    return all(match_value(pattern, values.get(key)) for key, pattern in patterns.items())


def select(checkups: list[CheckupResult], selector: Selector | None) -> list[CheckupResult]:
    return [c for c in checkups if selector is None or selector.matches(c)]


def calibration_corpus(checkup: CheckupResult) -> str | None:
    """The corpus the checkup was calibrated on: the recorded text, else the spec's own choice."""
    if checkup.calibration is not None:
        return checkup.calibration.corpus
    spec = checkup.modification.get("calibration")
    return spec.get("corpus") if isinstance(spec, dict) else None


def compression_level(modification: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """One number ordering how hard a modification compresses, comparable within a kind (higher: harsher);
    each kind declares its own in the modification registry."""
    return registry.compression_level(modification, realized)


def checkup_params(checkup: CheckupResult) -> dict[str, Any]:
    """The modification's parameters as one flat mapping (compose: the first step that sets a key wins)."""
    modification = checkup.modification
    params: dict[str, Any] = {}
    for leaf in leaves(modification):
        for key, value in leaf.items():
            if key not in ("calibration", "kind") and not isinstance(value, (dict, list)):
                params.setdefault(key, value)
    params["kind"] = modification.get("kind")
    params["kinds"] = ",".join(str(leaf.get("kind")) for leaf in leaves(modification))
    flat = leaves(modification)
    level = compression_level(flat[0], checkup.realized) if len(flat) == 1 else None
    if level is not None:
        params["compression"] = level
    return params


def modification_signature(checkup: CheckupResult) -> str:
    """The modification without its calibration choice, as canonical JSON: 'the same modification'."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in sorted(node.items()) if k != "calibration"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return json.dumps(strip(checkup.modification), sort_keys=True, default=str)


def group_key(checkup: CheckupResult, names: list[str]) -> dict[str, Any]:
    """The values that put a checkup into a group; 'modification' stands for the whole modification."""
    params = checkup_params(checkup)
    return {name: modification_signature(checkup) if name == "modification" else params.get(name) for name in names}
