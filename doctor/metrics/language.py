"""Perplexity, KL divergence and top-1 agreement from evaluation passes, with bootstrap intervals.

Intervals resample windows (the unit that is independent enough to resample), 95% percentile bootstrap,
seeded. Ratios to the baseline are paired: the same windows are resampled for both.
"""

from __future__ import annotations

import math

import numpy as np

from doctor.metrics.evaluation import PassResult
from doctor.results import Measurement

LEVEL = 0.95


def _resample_means(values: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Means of `draws` bootstrap resamples of `values` (windows)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(draws, values.shape[0]))
    return values[idx].mean(axis=1)


def _interval(values: np.ndarray, draws: int, seed: int, transform=lambda x: x) -> tuple[float, float] | None:
    if draws == 0 or values.shape[0] < 2:
        return None
    means = transform(_resample_means(values, draws, seed))
    alpha = (1 - LEVEL) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def _measure(value: float, bounds: tuple[float, float] | None, n: int, note: str | None = None) -> Measurement:
    lower, upper = bounds if bounds else (None, None)
    return Measurement(value=value, lower=lower, upper=upper, n=n, note=note)


def perplexity(result: PassResult, draws: int, seed: int) -> dict[str, Measurement]:
    n = result.nll.shape[0]
    ppl = math.exp(float(result.nll.mean()))
    return {"ppl": _measure(ppl, _interval(result.nll, draws, seed, np.exp), n, "windows")}


def against_baseline(base: PassResult, cur: PassResult, draws: int, seed: int) -> dict[str, Measurement]:
    """ppl, ppl_ratio, nll_delta, and (when computed) KL statistics and top-1 agreement."""
    n = cur.nll.shape[0]
    delta = cur.nll - base.nll  # paired per-window difference in nats/token
    out = perplexity(cur, draws, seed)
    out["nll_delta"] = _measure(float(delta.mean()), _interval(delta, draws, seed), n, "nats/token")
    out["ppl_ratio"] = _measure(math.exp(float(delta.mean())), _interval(delta, draws, seed, np.exp), n)
    if cur.agree_window is not None:
        out["top1_agreement"] = _measure(
            float(cur.agree_window.mean()), _interval(cur.agree_window, draws, seed), n
        )
    if cur.kl_window is not None and cur.kl_tokens is not None:
        tokens = cur.kl_tokens.shape[0]
        out["kl_mean"] = _measure(float(cur.kl_window.mean()), _interval(cur.kl_window, draws, seed), n, "nats")
        out["kl_median"] = _measure(float(np.median(cur.kl_tokens)), None, tokens, "nats, over tokens")
        out["kl_p99"] = _measure(float(np.quantile(cur.kl_tokens, 0.99)), None, tokens, "nats, over tokens")
        coverage = 1.0 if cur.coverage is None else cur.coverage
        out["topk_coverage"] = _measure(coverage, None, tokens, "baseline mass kept for KL")
    return out
