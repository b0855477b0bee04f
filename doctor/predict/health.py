"""Baseline health: is this model's dense perplexity plausible for its size, training data and eval context?

log PPL is fitted on the dense perplexities of the literature table (a family random intercept, since the
tokenizer alone shifts per-token perplexity) from log parameters (the Chinchilla-style size trend, Hoffmann et
al., arXiv 2203.15556), training tokens per parameter, evaluation context length (perplexity falls with
context, e.g. LLaMA-2-7B WikiText-2 5.12 at 4096 vs 5.47 at 2048 tokens) and the corpus. A baseline far below
the interval hints at evaluation text seen in training; far above, at broken weights, a wrong tokenizer or
template. Corpora outside the table (e.g. TinyStories) are not assessed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from doctor.predict.cases import patient_basics
from doctor.predict.fit import fit_mixed
from doctor.predict.predict import Z90, widening_var
from doctor.results import ModelFacts

HEALTH_FEATURES = ("const", "lp", "ltpp", "tpp_unknown", "lctx", "ctx_unknown", "d_c4", "d_ptb", "instruct")
_INSTRUCT = re.compile(r"instruct|chat|vicuna|(^|[-_])it($|[-_])", re.IGNORECASE)
CORPORA = {"wikitext2": "wikitext2_ppl", "c4": "c4_ppl", "ptb": "ptb_ppl"}


def corpus_metric(corpus: str | None) -> str | None:
    """The table's metric for an evaluation corpus name, None when the table has no such corpus."""
    text = (corpus or "").lower()
    if "wikitext" in text or "wiki.test" in text or "wiki.valid" in text:
        return "wikitext2_ppl"
    for key in ("c4", "ptb"):
        if re.search(rf"(^|[^a-z]){key}([^a-z]|$)", text):
            return CORPORA[key]
    return None


def health_row(params_b: float, tokens: float | None, ctx: float | None, metric: str, name: str) -> dict:
    tpp = math.log10(tokens / (params_b * 1e9)) if tokens else None
    return {
        "const": 1.0, "lp": math.log10(params_b / 7.0), "ltpp": (tpp - math.log10(200.0)) if tpp is not None else 0.0,
        "tpp_unknown": float(tpp is None), "lctx": math.log2(ctx / 2048.0) if ctx else 0.0,
        "ctx_unknown": float(not ctx), "d_c4": float(metric == "c4_ppl"), "d_ptb": float(metric == "ptb_ppl"),
        "instruct": float(bool(_INSTRUCT.search(name))),
        # domain axes (not features)
        "_log10_params_b": math.log10(params_b), "_log10_tokens_per_param": tpp, "_log2_ctx": math.log2(ctx) if ctx
        else None,
    }


def fit_health(frame: pd.DataFrame) -> dict:
    """Fit on table.baseline_rows(); returns the artifact's model part."""
    rows = [health_row(r["params_b"], r["training_tokens"] if r["training_tokens"] == r["training_tokens"] else None,
                       r["ctx"] if r["ctx"] == r["ctx"] else None, r["metric"], str(r["model"]))
            for r in frame.to_dict("records")]
    x = np.array([[row[f] for f in HEALTH_FEATURES] for row in rows])
    y = np.log(frame["dense"].to_numpy(dtype=float))
    groups = [str(g) for g in frame["model_family"]]
    fit = fit_mixed(x, y, groups, list(HEALTH_FEATURES))
    domain = {}
    for axis in ("log10_params_b", "log10_tokens_per_param", "log2_ctx"):
        values = [row[f"_{axis}"] for row in rows if row[f"_{axis}"] is not None]
        domain[axis] = [min(values), max(values)]
    return {
        "target": "log(dense perplexity)", "features": list(HEALTH_FEATURES), "coef": fit.coef.tolist(),
        "cov": fit.cov.tolist(), "family_var": fit.family_var, "resid_var": fit.resid_var,
        "family_effects": {k: list(v) for k, v in sorted(fit.family_effects.items())}, "domain": domain,
        "corpora": sorted(set(frame["metric"])),
        "training": {"rows": len(frame), "families": sorted(set(groups)), "converged": fit.converged,
                     "residual_sd": math.sqrt(fit.resid_var), "family_sd": math.sqrt(max(fit.family_var, 0.0))},
    }


def _gaps(row: dict, domain: dict) -> dict[str, float]:
    out = {}
    for axis, (lo, hi) in domain.items():
        value = row.get(f"_{axis}")
        if value is not None and (value < lo or value > hi):
            out[axis] = max(lo - value, value - hi)
    return out


def assess(model: dict, facts: ModelFacts, corpus: str | None, ctx: float | None, observed: float | None) -> dict:
    """Expected dense perplexity with a 90% interval, and a verdict on the observed one."""
    metric = corpus_metric(corpus)
    if metric is None:
        return {"verdict": "not-assessed", "in_domain": False, "corpus": corpus, "observed": observed,
                "warning": f"the baseline-health table has no perplexities on '{corpus}' "
                           "(only WikiText-2, C4, PTB); not assessed"}
    basics = patient_basics(facts)
    row = health_row(basics["params_b"], basics["training_tokens"], ctx, metric, facts.id)
    x = np.array([row[f] for f in model["features"]])
    effect = model["family_effects"].get(basics["family"] or "")
    offset, offset_var = (effect[0], effect[1]) if effect else (0.0, max(model["family_var"], 0.0))
    mean = float(x @ np.asarray(model["coef"])) + offset
    var = float(x @ np.asarray(model["cov"]) @ x) + offset_var + model["resid_var"]
    gaps = _gaps(row, model["domain"])
    sd = math.sqrt(var + widening_var(gaps))
    lower, upper = math.exp(mean - Z90 * sd), math.exp(mean + Z90 * sd)
    verdict = "ok"
    if observed is not None:
        verdict = ("better-than-expected" if observed < lower else "worse-than-expected" if observed > upper
                   else "ok")
    warning = None
    if gaps:
        warning = "outside the training domain (" + ", ".join(f"{a} off by {g:.2g}" for a, g in gaps.items()) + \
            "); interval widened"
    if basics["training_tokens"] is None:
        warning = (warning + "; " if warning else "") + "training tokens unknown"
    return {"metric": metric, "expected": math.exp(mean), "lower": lower, "upper": upper, "level": 0.9,
            "observed": observed, "z": (math.log(observed) - mean) / sd if observed else None, "verdict": verdict,
            "in_domain": not gaps, "warning": warning, "corpus": corpus, "ctx": ctx}
