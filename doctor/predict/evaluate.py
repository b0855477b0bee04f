"""Leave-one-family-out evaluation of the degradation model against a naive predictor.

For each family: fit on every other family, predict the held-out rows as a new family would be predicted.
The naive predictor is the median delta of the training rows of the same kind and bucket (bits for
quantization, sparsity rounded to 0.1 otherwise; the kind's median when the bucket is empty).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from doctor.predict import features as F
from doctor.predict.fit import fit_degradation
from doctor.predict.predict import Z90, Predictor

log = logging.getLogger(__name__)


def bucket(row: dict) -> str:
    if row["kind"] == "quantization":
        return f"bits={round(float(row['bits']))}"
    return f"sparsity={round(float(row['sparsity']) * 10) / 10:.1f}"


def naive_predictions(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    keys = train.assign(b=[bucket(r) for r in train.to_dict("records")])
    by_bucket = keys.groupby(["kind", "b"]).delta.median().to_dict()
    by_kind = keys.groupby("kind").delta.median().to_dict()
    overall = float(keys.delta.median())
    out = []
    for row in test.to_dict("records"):
        out.append(by_bucket.get((row["kind"], bucket(row)), by_kind.get(row["kind"], overall)))
    return np.asarray(out, dtype=float)


def held_out_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per training row: observed delta, model median, 90% bounds, naive median, in_domain."""
    parts = []
    for family in sorted(frame.model_family.unique()):
        train = frame[frame.model_family != family]
        test = frame[frame.model_family == family]
        predictor = Predictor(fit_degradation(train), meta={})
        preds = [predictor.predict_case(F.case_from_row(r)) for r in test.to_dict("records")]
        mean = np.array([p.mean for p in preds])
        sd = np.array([p.sd for p in preds])
        parts.append(pd.DataFrame({
            "family": family, "kind": test.kind.to_numpy(), "method": test.method.to_numpy(),
            "delta": test.delta.to_numpy(), "pred": F.from_scale(mean),
            "lower": F.from_scale(mean - Z90 * sd), "upper": F.from_scale(mean + Z90 * sd),
            "naive": naive_predictions(train, test), "in_domain": [p.in_domain for p in preds],
        }))
    out = pd.concat(parts, ignore_index=True)
    out["covered"] = (out.delta >= out.lower) & (out.delta <= out.upper)
    return out


def summarize(held: pd.DataFrame) -> pd.DataFrame:
    """Per kind and overall: rows, MAE of the log PPL ratio (model, naive), 90% interval coverage."""
    def stats(part: pd.DataFrame, name: str) -> dict:
        return {
            "kind": name, "rows": len(part),
            "mae_model": float(np.mean(np.abs(part.delta - part.pred))),
            "mae_naive": float(np.mean(np.abs(part.delta - part.naive))),
            "coverage_90": float(part.covered.mean()),
            "families": int(part.family.nunique()),
        }
    rows = [stats(part, kind) for kind, part in held.groupby("kind", sort=True)]
    rows.append(stats(held, "overall"))
    return pd.DataFrame(rows)


def family_summary(held: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for fam, part in held.groupby("family"):
        rows.append({"family": fam, "rows": len(part), "mae_model": float(np.mean(np.abs(part.delta - part.pred))),
                     "mae_naive": float(np.mean(np.abs(part.delta - part.naive))),
                     "coverage_90": float(part.covered.mean())})
    return pd.DataFrame(rows)


def is_acceptable(summary: pd.DataFrame) -> bool:
    overall = summary[summary.kind == "overall"].iloc[0]
    return 0.80 <= overall.coverage_90 <= 0.95 and overall.mae_model < overall.mae_naive and math.isfinite(
        overall.mae_model)
