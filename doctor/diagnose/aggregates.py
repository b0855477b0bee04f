"""Aggregates over a sweep of checkups or over a model's layers: plain functions on numbers.

A sweep is a list of (x, y) points: x the parameter that orders it (bits, sparsity), y an observation. Points
are ordered from the mildest to the harshest modification, and points sharing an x are averaged, so the
steps between them are well defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean, median, pstdev


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    checkups: tuple[str, ...]


@dataclass
class Result:
    """An aggregate's value and the facts that locate it (become `<name>_<key>` evidence)."""

    value: float | str | None
    extras: dict[str, object] = field(default_factory=dict)


def series(points: list[tuple[float, float, str]], descending: bool) -> list[Point]:
    """Points ordered mildest first (`descending`: a larger x is milder, as with bits), equal x averaged."""
    by_x: dict[float, list[tuple[float, str]]] = {}
    for x, y, checkup in points:
        by_x.setdefault(float(x), []).append((y, checkup))
    ordered = sorted(by_x, reverse=descending)
    return [Point(x, fmean(y for y, _ in by_x[x]), tuple(c for _, c in by_x[x])) for x in ordered]


def describe(values: list[float], how: str) -> float | None:
    """Order-free summaries: max, min, mean, median, sum, count, spread (max - min), cv, ratio (max / min)."""
    if how == "count":
        return float(len(values))
    if not values:
        return None
    if how == "spread":
        return max(values) - min(values)
    if how == "cv":
        mean = fmean(values)
        return pstdev(values) / abs(mean) if mean else None
    if how == "ratio":
        low = min(values)
        return max(values) / low if low > 0 else None
    return {"max": max, "min": min, "mean": fmean, "median": median, "sum": math.fsum}[how](values)


def slope(points: list[Point]) -> Result:
    """Least-squares slope of y on x (per unit of the ordering parameter)."""
    if len(points) < 2:
        return Result(None)
    mx, my = fmean(p.x for p in points), fmean(p.y for p in points)
    sxx = math.fsum((p.x - mx) ** 2 for p in points)
    sxy = math.fsum((p.x - mx) * (p.y - my) for p in points)
    return Result(sxy / sxx if sxx else None)


def max_step_ratio(points: list[Point], min_step: float) -> Result:
    """Where degradation accelerates most: the largest ratio of a step's rate to the previous step's rate.

    Step i goes from point i-1 to point i (mildest first); its rate is the rise in y per unit of x. The
    previous rate is floored at `min_step` so noise around zero does not make a cliff. The location is the x
    at the end of the accelerated step (e.g. the bit width where the cliff happens).
    """
    if len(points) < 3:
        return Result(None)
    rates = [(b.y - a.y) / abs(b.x - a.x) for a, b in zip(points, points[1:], strict=False)]
    best: tuple[float, int] | None = None
    for i in range(1, len(rates)):
        ratio = rates[i] / max(rates[i - 1], min_step)
        if best is None or ratio > best[0]:
            best = (ratio, i)
    ratio, i = best  # type: ignore[misc]
    start, end = points[i], points[i + 1]
    return Result(
        ratio,
        {
            "at": end.x,
            "before": start.x,
            "step": end.y - start.y,
            "rate": rates[i],
            "previous_rate": rates[i - 1],
            "checkup": end.checkups[0],
            "value_at": end.y,
            "value_before": start.y,
        },
    )


def last_within(points: list[Point], limit: float) -> Result:
    """The harshest x whose y stays at or below `limit`, before the first point beyond it."""
    last: Point | None = None
    for p in points:
        if p.y > limit:
            break
        last = p
    if last is None:
        return Result(None)
    return Result(last.x, {"value": last.y, "checkup": last.checkups[0]})


def first_beyond(points: list[Point], limit: float) -> Result:
    """The mildest x whose y exceeds `limit`."""
    for p in points:
        if p.y > limit:
            return Result(p.x, {"value": p.y, "checkup": p.checkups[0]})
    return Result(None)


def extreme(points: list[tuple[float, str]], how: str) -> Result:
    """max or min of per-checkup values, with the checkup that holds it."""
    if not points:
        return Result(None)
    pick = max if how == "max" else min
    value, checkup = pick(points, key=lambda p: p[0])
    return Result(value, {"checkup": checkup})


def top_share(values: dict[int, float], k: int) -> Result:
    """The share of the (positive) total carried by the k largest layers, and which layers they are."""
    positive = {layer: max(v, 0.0) for layer, v in values.items()}
    total = math.fsum(positive.values())
    if not positive or total <= 0:
        return Result(None, {"layers": [], "range": "", "total": total})
    top = sorted(positive, key=lambda layer: (-positive[layer], layer))[:k]
    share = math.fsum(positive[layer] for layer in top) / total
    return Result(share, {"layers": sorted(top), "range": layer_range(top), "total": total})


def layer_range(layers: list[int]) -> str:
    """Layer indices as compact text: [3, 4, 7] -> '3-4, 7'."""
    runs: list[list[int]] = []
    for layer in sorted(set(layers)):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
