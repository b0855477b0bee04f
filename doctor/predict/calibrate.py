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

MIN_ROWS = 20  # fewer inner held-out rows in a group: its own 90% quantile is noise, the pooled one is used
MIN_SOURCES = 3  # fewer publications: nothing to hold out against, no calibration (scale 1)
LIMITS = (0.5, 3.0)  # a scale outside these says the variance model is broken, not miscalibrated
Z90 = 1.6448536269514722
POOLED = "*"


def scale_for(z: np.ndarray) -> float:
    return float(np.clip(np.quantile(np.abs(z), 0.9) / Z90, *LIMITS))


def interval_scales(z: pd.DataFrame) -> dict[str, float]:
    """From the inner held-out rows (columns group, z; fit.inner_held_out_z): variance group -> sd scale, and
    POOLED for groups with too few rows; {} when there are too few rows to say anything."""
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
