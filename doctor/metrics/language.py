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
    if cur.dp_tokens is not None:
        out.update(delta_p_stats(cur.dp_tokens))
    if cur.kl_window is not None and cur.kl_tokens is not None:
        out["kl_mean"] = _measure(float(cur.kl_window.mean()), _interval(cur.kl_window, draws, seed), n, "nats")
        out.update(kl_token_stats(cur.kl_tokens))
        tokens = cur.kl_tokens.shape[0]
        coverage = 1.0 if cur.coverage is None else cur.coverage
        out["kl_coverage"] = _measure(coverage, None, tokens, "mean baseline probability mass the KL rests on")
        out["kl_coverage_min"] = _measure(1.0 if cur.coverage_min is None else cur.coverage_min, None, tokens,
                                          "smallest per-token baseline mass the KL rests on")
    return out


# llama.cpp's perplexity tool (--kl-divergence): percentiles of per-token KL over all scored tokens
KL_QUANTILES = {"kl_max": 1.0, "kl_p999": 0.999, "kl_p99": 0.99, "kl_p95": 0.95, "kl_p90": 0.90, "kl_median": 0.5}


def kl_token_stats(kl_tokens: np.ndarray) -> dict[str, Measurement]:
    """Max, p99.9, p99, p95, p90 and median of per-token KL (nats), as llama.cpp reports them."""
    tokens = kl_tokens.shape[0]
    values = np.quantile(kl_tokens.astype(np.float64), list(KL_QUANTILES.values()))
    return {key: _measure(float(v), None, tokens, "nats, over tokens") for key, v in zip(KL_QUANTILES, values, strict=True)}


def delta_p_stats(dp_tokens: np.ndarray) -> dict[str, Measurement]:
    """llama.cpp's delta-p: p_modified(next token) - p_baseline(next token) per token; mean, RMS, 1% and 99%."""
    dp = dp_tokens.astype(np.float64)
    tokens = dp.shape[0]
    p01, p99 = np.quantile(dp, [0.01, 0.99])
    return {
        "delta_p_mean": _measure(float(dp.mean()), None, tokens, "probability of the next token, over tokens"),
        "delta_p_rms": _measure(float(np.sqrt(np.mean(dp**2))), None, tokens, "over tokens"),
        "delta_p_p01": _measure(float(p01), None, tokens, "1st percentile, over tokens"),
        "delta_p_p99": _measure(float(p99), None, tokens, "99th percentile, over tokens"),
    }
