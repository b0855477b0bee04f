"""Number and text formatting shared by the report views; templates only print what these return."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

from doctor.formatting import _general, number, percent, value_text
from doctor.metrics import registry as metrics_registry
from doctor.modifications import registry

__all__ = ["_general", "number", "percent", "value_text"]

_BLANK_RUNS = re.compile(r"\n{3,}")
_FIXED = re.compile(r"\.(\d+)f$")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_LINK_BRACKET = re.compile(r"\](?=[(\[:])")


# Task metrics are named '<measure>:<task>'.
TASK_LABELS = {"acc": "accuracy", "acc_norm": "accuracy (length-normalised)", "acc_drop": "accuracy drop",
               "exact_match": "exact match"}


def metric_label(key: str) -> str:
    measure, _, task = key.partition(":")
    if task and measure in TASK_LABELS and metrics_registry.label(key) == key:
        return f"{TASK_LABELS[measure]}, {task}"
    return metrics_registry.label(key)


def is_metric(key: str) -> bool:
    return key in metrics_registry.metric_keys() or ":" in key


def compact(value: Any, key: str = "") -> str:
    """Like `number`, with fewer decimals as the integer part grows (84.802 rather than 84.8020): table cells."""
    text = number(value, key)
    fixed = _FIXED.search(metrics_registry.number_format(key) or "")
    if not isinstance(value, float) or not math.isfinite(value) or fixed is None or abs(value) < 10:
        return text
    digits = len(str(int(abs(value))))
    return f"{value:.{max(1, int(fixed.group(1)) - digits + 1)}f}"


def compact_interval(lower: float | None, upper: float | None, key: str = "") -> str:
    if lower is None or upper is None:
        return ""
    return f"[{compact(float(lower), key)}, {compact(float(upper), key)}]"


def significant(value: float | None, digits: int = 3) -> str:
    """A number to `digits` significant digits (predicted bands: their width dwarfs the fourth digit)."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return number(value)
    return f"{value:#.{digits}g}".rstrip(".") if abs(value) < 10 ** digits else f"{value:,.0f}"


def squeeze_blank_lines(text: str) -> str:
    """Markdown from templates: at most one blank line in a row, one newline at the end."""
    return _BLANK_RUNS.sub("\n\n", text).rstrip("\n") + "\n"


def describe_text_short(text: Any) -> str:
    return f"{text.corpus}, {text.tokens:,} tokens" if text is not None else "no text"


def signed(value: float | None, key: str = "") -> str:
    if value is None:
        return "–"
    text = number(float(value), key)
    return text if text.startswith("-") or text in ("NaN", "inf") else "+" + text


def interval(lower: float | None, upper: float | None, key: str = "") -> str:
    if lower is None or upper is None:
        return ""
    return f"[{number(float(lower), key)}, {number(float(upper), key)}]"


def bound(minimum: float | None, maximum: float | None, key: str = "") -> str:
    """A threshold as text: '≤ 1.10', '≥ 0.90' or '0.90 … 1.10'."""
    if minimum is not None and maximum is not None:
        return f"{number(float(minimum), key)} … {number(float(maximum), key)}"
    if maximum is not None:
        return f"≤ {number(float(maximum), key)}"
    if minimum is not None:
        return f"≥ {number(float(minimum), key)}"
    return ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def end_time(started: str, seconds: float) -> str:
    """The ISO end time of something that started at `started` and took `seconds` ('–' if unparseable)."""
    try:
        start = datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return "–"
    return (start + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def md_escape(value: Any) -> str:
    """Text that Markdown (GitHub flavour) shows literally inside a table cell: no HTML, no pipes, one line."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\")
    # Only what could start an HTML tag, comment or entity is escaped, so "ppl <= 1.1" stays readable.
    text = _ENTITY.sub("&amp;", text)
    text = _TAG_START.sub("&lt;", text)
    text = text.replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    # Underscores inside words never emphasize (GFM), so only word-edge ones are escaped; same for link brackets.
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    text = _LINK_BRACKET.sub(r"\\]", text)
    return " ".join(text.split())


def modification_summary(mod: dict[str, Any]) -> str:
    """One line naming what a checkup did, e.g. 'quantize gptq 4-bit g128' or 'prune wanda 2:4'."""
    return registry.summary(mod)
