"""Fitting: a linear mixed model with a random intercept per model family (statsmodels MixedLM, REML).

A new family's prediction variance is x'Cov(beta)x + family variance + residual variance (the residual
variance per modification kind, shrunk towards the pooled one), so the interval is honest about how much
families differ, which is what leave-one-family-out evaluation tests.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from doctor.errors import DataError
from doctor.predict import features as F

log = logging.getLogger(__name__)

SHRINK_ROWS = 10.0  # pseudo-rows of the pooled residual variance added to each kind's own


@dataclass
class MixedFit:
    names: list[str]
    coef: np.ndarray
    cov: np.ndarray
    family_var: float
    resid_var: float
    family_effects: dict[str, tuple[float, float]]  # family -> (BLUP, its posterior variance)
    residuals: np.ndarray  # conditional residuals (minus the family effect), training order
    converged: bool


def independent_columns(x: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Indices of a maximal set of linearly independent columns (pivoted QR), in original order."""
    from scipy.linalg import qr

    _, r, piv = qr(x, pivoting=True, mode="economic")
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > tol * max(diag[0], 1e-300)))
    return np.sort(piv[:rank])


def fit_mixed(x: np.ndarray, y: np.ndarray, groups: list[str], names: list[str]) -> MixedFit:
    """REML random-intercept fit; columns dependent on others in this table get coefficient 0 and variance 0."""
    import statsmodels.api as sm

    keep = independent_columns(x)
    xk = x[:, keep]
    model = sm.MixedLM(y, xk, groups=np.asarray(groups))
    result = None
    for method in ("bfgs", "powell", "nm"):  # lbfgs can step into a singular V on these tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = model.fit(reml=True, method=method)
        except (np.linalg.LinAlgError, ValueError) as exc:
            log.debug("MixedLM %s failed: %s", method, exc)
            continue
        if result.converged:
            break
    if result is None:
        raise DataError("predictor fit: the mixed model did not fit (singular design); check the training table")
    p = len(keep)
    coef = np.zeros(x.shape[1])
    cov = np.zeros((x.shape[1], x.shape[1]))
    coef[keep] = np.asarray(result.fe_params)
    cov[np.ix_(keep, keep)] = np.asarray(result.cov_params())[:p, :p]
    family_var = float(np.asarray(result.cov_re).ravel()[0])
    resid_var = float(result.scale)
    effects = {}
    for fam, eff in result.random_effects.items():
        n = sum(1 for g in groups if g == fam)
        post = 1.0 / (1.0 / max(family_var, 1e-12) + n / resid_var)
        effects[str(fam)] = (float(np.asarray(eff).ravel()[0]), post)
    offsets = np.array([effects[g][0] for g in groups])
    residuals = y - x @ coef - offsets
    if not np.all(np.isfinite(cov)):
        raise DataError("predictor fit: coefficient covariance is not finite; the training table is degenerate")
    return MixedFit(list(names), coef, cov, family_var, resid_var, effects, residuals, bool(result.converged))


def kind_variances(residuals: np.ndarray, kinds: list[str], pooled: float) -> dict[str, float]:
    """Residual variance per kind, shrunk towards the pooled variance by SHRINK_ROWS pseudo-rows."""
    out = {}
    kinds_arr = np.asarray(kinds)
    for kind in F.KINDS:
        r = residuals[kinds_arr == kind]
        out[kind] = float((np.sum(r**2) + SHRINK_ROWS * pooled) / (len(r) + SHRINK_ROWS))
    return out


def domain_of(cases: list[F.Case]) -> dict[str, list[float]]:
    """Per axis [min, max] over the training cases."""
    dom: dict[str, list[float]] = {}
    for case in cases:
        for axis, value in F.domain_axes(case).items():
            lo, hi = dom.get(axis, [math.inf, -math.inf])
            dom[axis] = [min(lo, value), max(hi, value)]
    return dom


def fit_degradation(frame: pd.DataFrame) -> dict:
    """Fit the degradation model on cleaned rows (table.degradation_rows); returns the artifact's model part."""
    if len(frame) < len(F.FEATURES):
        raise DataError(f"predictor fit: {len(frame)} usable rows, need at least {len(F.FEATURES)}")
    rows = frame.to_dict("records")
    cases = [F.case_from_row(r) for r in rows]
    x = F.design(cases)
    y = np.asarray(F.to_scale(frame["delta"].to_numpy()))
    groups = [str(g) for g in frame["model_family"]]
    fit = fit_mixed(x, y, groups, list(F.FEATURES))
    kinds = [c.kind for c in cases]
    counts = frame.groupby("kind").size().to_dict()
    return {
        "target": "log(log(ppl_mod/ppl_dense) + eps)",
        "eps": F.EPS,
        "encoding_version": F.ENCODING_VERSION,
        "features": list(F.FEATURES),
        "coef": fit.coef.tolist(),
        "cov": fit.cov.tolist(),
        "family_var": fit.family_var,
        "resid_var": fit.resid_var,
        "resid_var_by_kind": kind_variances(fit.residuals, kinds, fit.resid_var),
        "family_effects": {k: list(v) for k, v in sorted(fit.family_effects.items())},
        "domain": domain_of(cases),
        "training": {
            "rows": len(frame), "families": sorted(set(groups)), "rows_by_kind": {k: int(v) for k, v in counts.items()},
            "converged": fit.converged, "residual_sd": math.sqrt(fit.resid_var),
            "family_sd": math.sqrt(max(fit.family_var, 0.0)),
        },
    }
