"""Interval calibration by inner leave-one-source-out on the training rows (split-conformal style).

The variance model says how wide a new publication's interval should be, but classes and sources the table has
seen once make it wrong in both directions: held out, a method class whose only source is missing is unknown
and its interval opens up; an extreme regime one source alone covers is not foreseen. So every fit refits itself
without each of its own sources in turn (variance components held at the full fit's, only the fixed effects and
everything derived from them re-estimated: fast generalised least squares) and takes, per variance group, the
scale s that makes the 90% interval cover 90% of those inner held-out rows: s = q90(|z|) / z90, with z the
held-out error on the model scale in units of the predicted sd. A group with fewer than MIN_ROWS inner rows uses
the pooled s. Only the training rows are used, so a held-out evaluation of the fit stays honest (nested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from doctor.predict import features as F

MIN_ROWS = 20  # fewer inner held-out rows in a group: its own 90% quantile is noise, the pooled one is used
MIN_SOURCES = 3  # fewer publications: nothing to hold out against, no calibration (scale 1)
LIMITS = (0.5, 3.0)  # a scale outside these says the variance model is broken, not miscalibrated
Z90 = 1.6448536269514722
POOLED = "*"


def inner_z(frame: pd.DataFrame, model: dict) -> pd.DataFrame:
    """Per training row: its variance group and z = (t_observed - mean) / sd, predicted by a fit without the
    row's source."""
    from doctor.predict.fit import fit_degradation
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


def scale_for(z: np.ndarray) -> float:
    return float(np.clip(np.quantile(np.abs(z), 0.9) / Z90, *LIMITS))


def interval_scales(frame: pd.DataFrame, model: dict) -> dict[str, float]:
    """Variance group -> sd scale (and POOLED for groups with too few rows); {} when the table has too few
    sources to hold any out."""
    from threadpoolctl import threadpool_limits

    if frame.source.nunique() < MIN_SOURCES:
        return {}
    with threadpool_limits(1):  # small matrices: BLAS threads only fight each other (seconds instead of ms)
        z = inner_z(frame, model)
    if len(z) < MIN_ROWS:
        return {}
    out = {POOLED: scale_for(z.z.to_numpy())}
    for group, part in z.groupby("group"):
        if len(part) >= MIN_ROWS:
            out[str(group)] = scale_for(part.z.to_numpy())
    return out


def scale_of(model: dict, group: str) -> float:
    scales = model.get("interval_scale") or {}
    return float(scales.get(group, scales.get(POOLED, 1.0)))
