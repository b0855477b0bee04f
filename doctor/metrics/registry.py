"""The registry of metric groups: the one source of metric names, observation keys, labels, units and formats.

A group is one module in `doctor.metrics.groups` (or an installed plugin, entry point group
`model_doctor.metrics`) that declares `GROUP = MetricGroup(...)`. Measuring happens in `doctor.measuring`;
nothing here imports torch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from doctor.plugins import builtin, installed, resolve

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "model_doctor.metrics"


@dataclass(frozen=True)
class MetricKey:
    """One observation key: how the report names it, its unit, and its number format."""

    key: str
    label: str | None = None  # None: the key itself
    unit: str = ""
    format: str | None = None  # a format spec such as '.4f'; None: four significant digits
    summary: bool = False  # a candidate key metric of the report's summary row (registry order)


@dataclass(frozen=True)
class MetricGroup:
    """A metric a checkup can ask for by name.

    - `keys`: the observation keys it produces; `key_pattern` (a regex) for keys made per item, like
      `acc:<task>`.
    - `evaluation`: what it needs from the one evaluation pass over the eval windows that all groups share:
      None (nothing), 'nll' (per-window NLL), 'kl' (NLL plus KL against the baseline log-probs).
    - `measure(measuring) -> {key: Measurement}`: runs while the modification is applied (`doctor.measuring`).
    - `after_restore(measuring) -> {key: Measurement}`: optional, runs once the weights are restored (e.g. the
      base model scoring text the modified one generated).
    - `rank`: order in metric lists (built-ins 10..90; plugins default after them).
    """

    name: str
    keys: tuple[MetricKey, ...]
    measure: Callable[[Any], dict[str, Any]] | str
    evaluation: Literal["nll", "kl"] | None = None
    key_pattern: str | None = None
    after_restore: Callable[[Any], dict[str, Any]] | str | None = None
    rank: int = 500
    description: str = ""

    def measure_fn(self) -> Callable[[Any], dict[str, Any]]:
        return resolve(self.measure)

    def after_restore_fn(self) -> Callable[[Any], dict[str, Any]] | None:
        return None if self.after_restore is None else resolve(self.after_restore)


@cache
def groups() -> dict[str, MetricGroup]:
    """Every registered metric group by name, built-ins first; a plugin cannot replace a built-in group."""
    found: dict[str, MetricGroup] = {}
    candidates = [(g, "doctor.metrics.groups") for g in builtin("doctor.metrics.groups", "GROUP")]
    candidates += [(g, f"plugin {name!r}") for name, g in installed(ENTRY_POINT_GROUP)]
    for group, origin in candidates:
        if not isinstance(group, MetricGroup):
            log.warning("metric group skipped: %s: expected a MetricGroup, got %s", origin, type(group).__name__)
        elif group.name in found:
            log.warning("metric group skipped: %s: '%s' is already registered", origin, group.name)
        else:
            found[group.name] = group
    return dict(sorted(found.items(), key=lambda item: (item[1].rank, item[0])))


@cache
def metric_keys() -> dict[str, MetricKey]:
    """Every fixed observation key, by key."""
    return {k.key: k for group in groups().values() for k in group.keys}


@cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(g.key_pattern) for g in groups().values() if g.key_pattern)


def report_order() -> tuple[str, ...]:
    """Every fixed key in registry order: the order of metric rows in a report (other keys follow by name)."""
    return tuple(metric_keys())


def summary_keys() -> tuple[str, ...]:
    """Candidate key metrics of the report's summary row, in registry order (the first one a checkup measured)."""
    return tuple(k for k, m in metric_keys().items() if m.summary)


def is_metric_key(key: str) -> bool:
    return key in metric_keys() or any(p.fullmatch(key) for p in _patterns())


def label(key: str) -> str:
    known = metric_keys().get(key)
    return known.label if known is not None and known.label else key


def number_format(key: str) -> str | None:
    known = metric_keys().get(key)
    return None if known is None else known.format


def unit(key: str) -> str:
    known = metric_keys().get(key)
    return "" if known is None else known.unit
