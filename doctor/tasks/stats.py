"""Intervals for task and generation metrics, and the spread of a metric across checkups.

Accuracies are proportions of items, so they get a Wilson score interval (well-behaved at 0 and 1, unlike
the plain normal interval lm-evaluation-harness reports as a standard error). Generation metrics are means
or ratios over prompts, so they get a seeded percentile bootstrap over prompts (a jackknife for
corpus-level ratios such as distinct-n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from doctor.results import Measurement

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 or 1 one bound equals p exactly; rounding must not push p outside its own interval
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def proportion(outcomes: Sequence[bool], note: str | None = None) -> Measurement:
    n = len(outcomes)
    hits = int(sum(bool(o) for o in outcomes))
    lower, upper = wilson_interval(hits, n)
    return Measurement(value=hits / n if n else math.nan, lower=lower, upper=upper, n=n, note=note)


def bootstrap(
    columns: Sequence[np.ndarray],
    statistic: Callable[..., float],
    resamples: int = 1000,
    seed: int = 0,
    note: str | None = None,
) -> Measurement:
    """`statistic(*columns)` with a 95% percentile interval from resampling rows (prompts) with replacement."""
    n = len(columns[0])
    value = float(statistic(*columns))
    if n < 2 or resamples <= 0:
        return Measurement(value=value, n=n, note=note)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        rows = rng.integers(0, n, size=n)
        draws.append(statistic(*(c[rows] for c in columns)))
    finite = np.asarray(draws, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Measurement(value=value, n=n, note=note)
    lower, upper = np.percentile(finite, [2.5, 97.5])
    return Measurement(value=value, lower=float(lower), upper=float(upper), n=n, note=note)


def jackknife(n: int, statistic: Callable[[np.ndarray], float], note: str | None = None) -> Measurement:
    """`statistic(all rows)` with a normal 95% interval from the leave-one-out (jackknife) standard error.

    For corpus-level statistics such as distinct-n, which a bootstrap would bias: resampling with replacement
    duplicates texts and so duplicates n-grams."""
    rows = np.arange(n)
    value = float(statistic(rows))
    if n < 2:
        return Measurement(value=value, n=n, note=note)
    loo = np.array([statistic(np.delete(rows, i)) for i in range(n)], dtype=float)
    se = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    return Measurement(value=value, lower=value - Z95 * se, upper=value + Z95 * se, n=n, note=note)


def spread(values: Mapping[str, float] | Sequence[float]) -> dict[str, float | int | str | None]:
    """Spread of one metric across strategies: min, max, range (max - min), mean, std and coefficient of
    variation (population std / |mean|). With a mapping, also which key gave the min and the max."""
    keys = list(values) if isinstance(values, Mapping) else None
    raw = list(values.values()) if isinstance(values, Mapping) else list(values)
    pairs = [(k, float(v)) for k, v in zip(keys or range(len(raw)), raw, strict=True) if v is not None and math.isfinite(v)]
    if not pairs:
        return {"n": 0, "min": None, "max": None, "range": None, "mean": None, "std": None, "cv": None}
    arr = np.array([v for _, v in pairs])
    mean, std = float(arr.mean()), float(arr.std())
    out: dict[str, float | int | str | None] = {
        "n": len(pairs),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "range": float(arr.max() - arr.min()),
        "mean": mean,
        "std": std,
        "cv": std / abs(mean) if mean != 0 else (0.0 if std == 0 else math.inf),
    }
    if keys is not None:
        out["argmin"] = str(pairs[int(arr.argmin())][0])
        out["argmax"] = str(pairs[int(arr.argmax())][0])
    return out
