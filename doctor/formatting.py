"""Values as text: numbers with the precision their metric deserves, and compact nested values.

Shared by the reports and by the one-line summaries that modification kinds declare.
"""

from __future__ import annotations

import json
import math
from typing import Any

from doctor.metrics.registry import number_format


def number(value: Any, key: str = "") -> str:
    """A metric value as text, with precision chosen by metric; '–' for missing, 'NaN'/'inf' spelled out."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    spec = number_format(key)
    return f"{value:{spec}}" if spec else _general(value)


def _general(value: float) -> str:
    """Four significant digits, switching to scientific notation for tiny or huge magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def value_text(value: Any) -> str:
    """Any evidence or realized value as compact text (nested values as sorted JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_rounded(value), sort_keys=True, ensure_ascii=False)
    return number(value)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(_general(value)) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value
