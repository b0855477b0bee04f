"""Held-out evaluation of the degradation model against two naive predictors.

Leave-one-source-out (the default) refits without every row of one publication and predicts that
publication's rows: what a user bringing a new paper's method, regime and evaluation gets. Leave-one-family-out
does the same per model family. `score_table` scores a fitted predictor on any table without refitting.

The naive predictors are medians of the training rows' delta: of the same kind, and of the same kind and
bucket (bits for quantization, sparsity rounded to 0.1 otherwise; the kind's median when the bucket is empty).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from doctor.predict import features as F
from doctor.predict.fit import fit_degradation
from doctor.predict.predict import Predictor

log = logging.getLogger(__name__)

GROUPINGS = {"source": "source", "family": "model_family"}


def bucket(row: dict) -> str:
    if row["kind"] == "quantization":
        bits = float(row["bits"])
        return "bits<2" if bits < 1.95 else f"bits={round(bits)}"
    return f"sparsity={round(float(row['sparsity']) * 10) / 10:.1f}"


def naive_predictions(train: pd.DataFrame, test: pd.DataFrame, by_bucket: bool = True) -> np.ndarray:
    """Median training delta of the test row's kind and bucket (or kind only); the kind's, then the overall
    median where that is empty."""
    keys = train.assign(b=[bucket(r) for r in train.to_dict("records")])
    per_bucket = keys.groupby(["kind", "b"]).delta.median().to_dict()
    per_kind = keys.groupby("kind").delta.median().to_dict()
    overall = float(keys.delta.median())
    out = []
    for row in test.to_dict("records"):
        kind = per_kind.get(row["kind"], overall)
        out.append(per_bucket.get((row["kind"], bucket(row)), kind) if by_bucket else kind)
    return np.asarray(out, dtype=float)


def predict_rows(predictor: Predictor, test: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Per test row: observed delta, model median and 90% bounds (log PPL ratio), both naive medians."""
    rows = test.to_dict("records")
    preds = [predictor.predict_row(r) for r in rows]
    return pd.DataFrame({
        "source": test.source.to_numpy(), "family": test.model_family.to_numpy(), "kind": test.kind.to_numpy(),
        "method": test.method.to_numpy(), "bucket": [bucket(r) for r in rows],
        "delta": test.delta.to_numpy(dtype=float), "pred": [p.point for p in preds],
        "lower": [p.lower for p in preds], "upper": [p.upper for p in preds],
        "naive_kind": naive_predictions(train, test, by_bucket=False),
        "naive_bucket": naive_predictions(train, test), "in_domain": [p.in_domain for p in preds],
        "cap": [p.cap for p in preds],
    })


def held_out_predictions(frame: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """Refit without each group (`source` or `family`) in turn and predict its rows as unseen."""
    column = GROUPINGS[by]
    parts = []
    for group in sorted(frame[column].unique()):
        train = frame[frame[column] != group]
        test = frame[frame[column] == group]
        predictor = Predictor(fit_degradation(train), meta={})
        parts.append(predict_rows(predictor, test, train).assign(held_out=group))
    return finish(pd.concat(parts, ignore_index=True))


def finish(held: pd.DataFrame) -> pd.DataFrame:
    """Coverage against the bounds; the observed delta is compared at the row's cap (beyond uniform guessing,
    every collapse is the same collapse)."""
    held = held.copy()
    observed = np.minimum(held.delta, held.cap)
    held["covered"] = (observed >= held.lower - 1e-12) & (observed <= held.upper + 1e-12)
    held["width"] = held.upper - held.lower
    return held


def stats(part: pd.DataFrame) -> dict:
    """n, MAE and median absolute error of the model and of both naive medians, 90% coverage and width; all
    against the observed delta taken at most at the cap (past uniform guessing, a collapse is a collapse)."""
    observed = np.minimum(part.delta, part.cap)
    err = np.abs(observed - part.pred)
    return {
        "n": len(part), "mae": float(err.mean()), "median_ae": float(err.median()),
        "naive_kind_mae": float(np.abs(observed - part.naive_kind).mean()),
        "naive_bucket_mae": float(np.abs(observed - part.naive_bucket).mean()),
        "naive_bucket_median_ae": float(np.abs(observed - part.naive_bucket).median()),
        "coverage90": float(part.covered.mean()), "median_width": float(part.width.median()),
        "in_domain": float(part.in_domain.mean()),
    }


def summarize(held: pd.DataFrame, by: str = "kind") -> pd.DataFrame:
    """One row per value of `by` (kind, bucket, source, family), then `overall`."""
    rows = [{by: str(key), **stats(part)} for key, part in held.groupby(by, sort=True)]
    if by == "bucket":
        rows = [{by: f"{k} {b}", **stats(p)} for (k, b), p in held.groupby(["kind", "bucket"], sort=True)]
    rows.append({by: "overall", **stats(held)})
    return pd.DataFrame(rows)


def report(held: pd.DataFrame) -> dict:
    """All numbers as one JSON-able dict: overall, per kind, per kind x bucket."""
    return {
        "overall": stats(held),
        "by_kind": {k: stats(p) for k, p in held.groupby("kind", sort=True)},
        "by_bucket": {f"{k} {b}": stats(p) for (k, b), p in held.groupby(["kind", "bucket"], sort=True)},
        "beyond_uniform_guessing": int((held.pred > held.cap + 1e-9).sum() + (held.upper > held.cap + 1e-9).sum()),
    }


def score_table(predictor: Predictor, table: pd.DataFrame, train: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Score a fitted predictor on `table` (training-table layout, already cleaned) without refitting;
    rows it cannot featurize come back with the reason."""
    good, skipped = [], []
    for index, row in table.iterrows():  # index: the data row in the scored table
        try:
            F.case_from_row(row.to_dict())
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append({"row": int(index), "source": str(row.get("source")), "model": str(row.get("model")),
                            "method": str(row.get("method")), "reason": str(exc) or type(exc).__name__})
            continue
        good.append(index)
    if not good:
        return pd.DataFrame(), skipped
    return finish(predict_rows(predictor, table.loc[good], train)), skipped


def is_acceptable(summary: pd.DataFrame) -> bool:
    overall = summary.iloc[-1]
    return 0.80 <= overall.coverage90 <= 0.95 and overall.mae < overall.naive_bucket_mae and math.isfinite(
        overall.mae)
