"""Fitting: a linear mixed model with a random intercept per model family (statsmodels MixedLM, REML).

A new family's prediction variance is x'Cov(beta)x + family variance + residual variance (the residual
variance per modification kind, shrunk towards the pooled one), so the interval is honest about how much
families differ, which is what leave-one-family-out evaluation tests.

A coefficient the table cannot identify (no row has its feature, or it is a combination of others) gets 0 (a
method-class effect: the median of the identified classes of its block) and a prior sd: as large as the largest
identified coefficient of the same block (method classes of one kind, say).
The artifact lists those as `unidentified`, and a prediction that uses one widens by that sd, so a method
class whose only source is missing gets an honest "unknown" instead of a silent zero.
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
from doctor.predict.calibrate import MIN_SOURCES, interval_scales

log = logging.getLogger(__name__)

SHRINK_ROWS = 10.0  # pseudo-rows of the pooled residual variance added to each kind's own
MIN_BUCKET_ROWS = 10  # fewer rows give no kind x bucket mean to combine with (the kind's is used)
MIN_PRIOR_SD = 0.5  # an unidentified effect is at least a factor e^0.5 on delta either way


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
    unidentified: list[str]  # features whose coefficient this table cannot estimate (set to 0)


def independent_columns(x: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """Indices of a maximal set of linearly independent columns (pivoted QR), in original order."""
    from scipy.linalg import qr

    _, r, piv = qr(x, pivoting=True, mode="economic")
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > tol * max(diag[0], 1e-300)))
    return np.sort(piv[:rank])


def gls_given_variances(xk: np.ndarray, y: np.ndarray, groups: list[str], family_var: float,
                        resid_var: float) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Generalised least squares of the random-intercept model with its variance components held fixed:
    (beta, Cov(beta), per-family BLUP). The same estimator MixedLM ends with, without re-estimating the
    variances; the inner folds of the interval calibration use it (variances from the fit they calibrate)."""
    tau2 = max(family_var, 0.0)
    _, index, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    shrink = tau2 / (resid_var + counts * tau2)  # V_g^-1 = (I - shrink_g 11') / resid_var, block by family

    def v_inv(a: np.ndarray) -> np.ndarray:
        sums = np.zeros((len(counts),) + a.shape[1:])
        np.add.at(sums, index, a)
        return (a - (shrink[:, None] * sums if a.ndim == 2 else shrink * sums)[index]) / resid_var

    vx, vy = v_inv(xk), v_inv(y)
    cov = np.linalg.pinv(xk.T @ vx)
    beta = cov @ (xk.T @ vy)
    r = y - xk @ beta
    g = np.asarray(groups)
    blup = {fam: float(tau2 * r[g == fam].sum() / (resid_var + (g == fam).sum() * tau2)) for fam in sorted(set(groups))}
    return beta, cov, blup


def fit_mixed(x: np.ndarray, y: np.ndarray, groups: list[str], names: list[str],
              variances: tuple[float, float] | None = None) -> MixedFit:
    """REML random-intercept fit; columns dependent on others in this table get coefficient 0 (listed).
    With `variances` (family, residual) given, only the fixed effects are re-estimated (GLS)."""
    import statsmodels.api as sm

    keep = independent_columns(x)
    xk = x[:, keep]
    if variances is not None:
        return _fixed_variance_fit(x, y, groups, names, keep, *variances)
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
    unidentified = [names[j] for j in range(x.shape[1]) if j not in set(keep.tolist())]
    return MixedFit(list(names), coef, cov, family_var, resid_var, effects, residuals, bool(result.converged),
                    unidentified)


def _fixed_variance_fit(x, y, groups, names, keep, family_var: float, resid_var: float) -> MixedFit:
    beta, cov_k, blup = gls_given_variances(x[:, keep], y, groups, family_var, resid_var)
    coef = np.zeros(x.shape[1])
    cov = np.zeros((x.shape[1], x.shape[1]))
    coef[keep], cov[np.ix_(keep, keep)] = beta, cov_k
    effects = {}
    for fam, eff in blup.items():
        n = sum(1 for g in groups if g == fam)
        effects[fam] = (eff, 1.0 / (1.0 / max(family_var, 1e-12) + n / resid_var))
    residuals = y - x @ coef - np.array([effects[g][0] for g in groups])
    missing = [names[j] for j in range(x.shape[1]) if j not in set(keep.tolist())]
    return MixedFit(list(names), coef, cov, family_var, resid_var, effects, residuals, True, missing)


def _block(name: str) -> str:
    """The coefficient block a feature belongs to: the method-class effects of one kind, their cliff slopes, or
    for any other feature its prefix (all quantization terms, all unstructured terms, ...)."""
    if name in F.CLASS_EFFECTS:
        return F.CLASS_EFFECTS[name]
    if name.endswith("_cliff"):
        return "cliff"
    return name.split("_", 1)[0] if "_" in name else name


def typical_effects(names: list[str], coef: np.ndarray, missing: list[str]) -> np.ndarray:
    """Coefficients with each unidentified method-class effect set to the median of the identified ones of its
    block (the reference class counting as 0): a class the table has not seen is taken as a typical class,
    not as the reference one, and one extreme class (AWQ's 2-bit collapse, say) does not drag it."""
    out = coef.copy()
    for j, name in enumerate(names):
        if name not in missing or name not in F.CLASS_EFFECTS:
            continue
        known = [float(coef[i]) for i, n in enumerate(names) if n not in missing
                 and F.CLASS_EFFECTS.get(n) == F.CLASS_EFFECTS[name]]
        out[j] = float(np.median([0.0, *known]))
    return out


def unidentified_sd(names: list[str], coef: np.ndarray, cov: np.ndarray, missing: list[str]) -> dict[str, float]:
    """Prior sd of each unidentified coefficient: the largest |coef| + se in its block (at least MIN_PRIOR_SD)."""
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    out = {}
    for name in missing:
        block = _block(name)
        known = [abs(coef[j]) + se[j] for j, n in enumerate(names) if n not in missing and _block(n) == block
                 and n != "const"]
        out[name] = max([MIN_PRIOR_SD, *known])
    return out


def unknown_method_sd(names: list[str], coef: np.ndarray, missing: list[str]) -> dict[str, float]:
    """Per kind, how far a method the table has never seen may sit from its class: the spread (rms, at least
    MIN_PRIOR_SD / 2) of the identified method-class effects of that kind, the reference class counting as 0."""
    out = {}
    for kind in F.KINDS:
        block = "unstructured" if kind == "semi-structured" else kind
        effects = [0.0] + [float(c) for n, c in zip(names, coef, strict=True)
                           if F.CLASS_EFFECTS.get(n) == block and n not in missing]
        out[kind] = max(MIN_PRIOR_SD / 2, float(np.sqrt(np.mean(np.square(effects)))))
    return out


def kind_variances(residuals: np.ndarray, kinds: list[str], pooled: float) -> dict[str, float]:
    """Residual variance per variance group (features.variance_group: a kind, quantization split at the
    cliff), shrunk towards the pooled variance by SHRINK_ROWS pseudo-rows."""
    out = {}
    kinds_arr = np.asarray(kinds)
    for group in F.VARIANCE_GROUPS:
        r = residuals[kinds_arr == group]
        out[group] = float((np.sum(r**2) + SHRINK_ROWS * pooled) / (len(r) + SHRINK_ROWS))
    return out


def bucket_prior(cases: list[F.Case], y: np.ndarray) -> dict[str, list[float]]:
    """Per kind x bucket (features.bucket_of) and per kind: [mean, variance] of t over the training rows, where
    at least MIN_BUCKET_ROWS rows say it."""
    out: dict[str, list[float]] = {}
    keys = [F.bucket_of(c) for c in cases]
    for key in sorted(set(keys)) + sorted({c.kind for c in cases}):
        t = y[[k == key or (c.kind == key) for k, c in zip(keys, cases, strict=True)]]
        if len(t) >= MIN_BUCKET_ROWS:
            out[key] = [float(np.mean(t)), float(np.var(t, ddof=1))]
    return out


def source_variances(residuals: np.ndarray, groups: list[str], sources: list[str]) -> dict[str, float]:
    """Per variance group, the variance of a publication's shared offset (method of moments on the per-source
    mean residuals); a new source, such as this tool's own harness, has an unknown one."""
    out = {}
    g_arr, s_arr = np.asarray(groups), np.asarray(sources)
    for group in F.VARIANCE_GROUPS:
        r, s = residuals[g_arr == group], s_arr[g_arr == group]
        names = sorted(set(s))
        if len(names) < 2:
            out[group] = 0.0
            continue
        within = float(np.var(r, ddof=1))
        means = np.array([r[s == n].mean() for n in names])
        counts = np.array([(s == n).sum() for n in names])
        out[group] = float(max(0.0, np.average(means**2, weights=counts) - within * len(names) / counts.sum()))
    return out


def domain_of(cases: list[F.Case]) -> dict[str, list[float]]:
    """Per axis [min, max] over the training cases."""
    dom: dict[str, list[float]] = {}
    for case in cases:
        for axis, value in F.domain_axes(case).items():
            lo, hi = dom.get(axis, [math.inf, -math.inf])
            dom[axis] = [min(lo, value), max(hi, value)]
    return dom


def fit_degradation(frame: pd.DataFrame, calibrate: bool = True,
                    variances: tuple[float, float] | None = None) -> dict:
    """Fit the degradation model on cleaned rows (table.degradation_rows); returns the artifact's model part.
    `calibrate`: also scale the intervals by inner leave-one-source-out on these rows (calibrate.py);
    `variances` (family, residual): hold the variance components fixed (the calibration's inner folds)."""
    if len(frame) < len(F.FEATURES):
        raise DataError(f"predictor fit: {len(frame)} usable rows, need at least {len(F.FEATURES)}")
    rows = frame.to_dict("records")
    cases = [F.case_from_row(r) for r in rows]
    x = F.design(cases)
    y = np.asarray(F.to_scale(frame["delta"].to_numpy(dtype=float), np.array([F.cap_or_default(c.cap) for c in cases])))
    groups = [str(g) for g in frame["model_family"]]
    fit = fit_mixed(x, y, groups, list(F.FEATURES), variances)
    kinds = [F.variance_group(c) for c in cases]
    counts = frame.groupby("kind").size().to_dict()
    model = {
        "target": "log(delta + eps) - log(1 - delta/cap + top), delta = log(ppl_mod/ppl_dense), "
                  "cap = log(vocab/ppl_dense)",
        "eps": F.EPS, "top": F.TOP,
        "encoding_version": F.ENCODING_VERSION,
        "features": list(F.FEATURES),
        "coef": typical_effects(fit.names, fit.coef, fit.unidentified).tolist(),
        "cov": fit.cov.tolist(),
        "family_var": fit.family_var,
        "resid_var": fit.resid_var,
        "resid_var_by_kind": kind_variances(fit.residuals, kinds, fit.resid_var),
        "source_var_by_kind": source_variances(fit.residuals, kinds, [str(s) for s in frame["source"]]),
        "family_effects": {k: list(v) for k, v in sorted(fit.family_effects.items())},
        "unidentified": unidentified_sd(fit.names, fit.coef, fit.cov, fit.unidentified),
        "unknown_method_sd": unknown_method_sd(fit.names, fit.coef, fit.unidentified),
        "methods": sorted({c.method_name for c in cases if c.method_name}),
        "domain": domain_of(cases),
        "bucket_prior": bucket_prior(cases, y),
        "training": {
            "rows": len(frame), "families": sorted(set(groups)), "rows_by_kind": {k: int(v) for k, v in counts.items()},
            "converged": fit.converged, "residual_sd": math.sqrt(fit.resid_var),
            "family_sd": math.sqrt(max(fit.family_var, 0.0)),
        },
    }
    if calibrate:
        model["interval_scale"] = calibrated_scales(frame, model)
    return model


def calibrated_scales(frame: pd.DataFrame, model: dict) -> dict[str, float]:
    """The interval scales of a fit (calibrate.py) from its own training rows, each source held out in turn."""
    from threadpoolctl import threadpool_limits

    if frame.source.nunique() < MIN_SOURCES:
        return {}
    with threadpool_limits(1):  # small matrices: BLAS threads only fight each other (seconds instead of ms)
        return interval_scales(inner_held_out_z(frame, model))


def inner_held_out_z(frame: pd.DataFrame, model: dict) -> pd.DataFrame:
    """Per training row: its variance group and z = (t_observed - mean) / sd, predicted by a fit without the
    row's source."""
    from doctor.predict.predict import Predictor

    variances = (float(model["family_var"]), float(model["resid_var"]))
    parts = []
    for source in sorted(frame.source.unique()):
        train, test = frame[frame.source != source], frame[frame.source == source]
        if len(train) < len(F.FEATURES):
            continue
        inner = Predictor(fit_degradation(train, calibrate=False, variances=variances), meta={})
        for row in test.to_dict("records"):
            pred = inner.predict_case(F.case_from_row(row))
            t = float(F.to_scale(float(row["delta"]), pred.cap))
            parts.append((F.variance_group(F.case_from_row(row)), (t - pred.mean) / pred.sd))
    return pd.DataFrame(parts, columns=["group", "z"])
