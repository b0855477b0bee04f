"""Per-patient adaptation: this model's own offset, learned from its mild checkups, applied to harsher ones.

The degradation model has a random intercept per family; a patient's offset is unknown a priori (variance:
the family variance plus, outside the training domain, the widening). Mild checkups (8/6/5/4-bit
quantization, at most 30% unstructured sparsity) are measured precisely and say where this model sits, so
the offset gets the normal-normal (random-effect BLUP) update

    b = sum(r_i / v_i) / (1 / tau^2 + sum(1 / v_i)),    var(b) = 1 / (1 / tau^2 + sum(1 / v_i)),

with r_i the anchors' residuals on the model scale and v_i their residual plus measurement variance.
Anchors keep their prior expectation, so no checkup is judged against itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from doctor.predict import features as F
from doctor.predict.predict import ScalePrediction

MILD_BITS = 4.0
MILD_SPARSITY = 0.3


@dataclass(frozen=True)
class Anchor:
    """A mild checkup's prior prediction and its observed delta (log PPL ratio)."""

    pred: ScalePrediction
    delta: float
    delta_sd: float = 0.0  # measurement sd of delta (from the bootstrap interval), 0 when unknown


def is_mild(case: F.Case) -> bool:
    if case.kind == "quantization":
        return case.bits is not None and case.bits >= MILD_BITS
    if case.kind == "unstructured":
        return case.sparsity is not None and case.sparsity <= MILD_SPARSITY
    return False


def anchor_variance(anchor: Anchor) -> float:
    """Residual variance on the model scale (prediction variance minus the offset part) plus measurement."""
    resid = max(anchor.pred.var - anchor.pred.offset_var, 1e-6)
    cap = F.cap_or_default(anchor.pred.cap)
    d = min(max(anchor.delta, -F.EPS / 2), cap)
    slope = 1.0 / (d + F.EPS) + 1.0 / (cap * (1.0 - d / cap + F.TOP))  # d t / d delta
    return resid + (slope * anchor.delta_sd) ** 2


def offset_update(anchors: list[Anchor], prior_var: float) -> tuple[float, float]:
    """(posterior mean, posterior variance) of the patient offset given the anchors; (0, prior) without."""
    precision = 1.0 / max(prior_var, 1e-9)
    weighted = 0.0
    for anchor in anchors:
        v = anchor_variance(anchor)
        precision += 1.0 / v
        weighted += (float(F.to_scale(anchor.delta, anchor.pred.cap)) - anchor.pred.mean) / v
    return weighted / precision, 1.0 / precision


def adapt(pred: ScalePrediction, anchors: list[Anchor]) -> ScalePrediction:
    """The prediction with the patient's offset updated from the anchors (the target's own prior offset)."""
    if not anchors:
        return pred
    shift, post_var = offset_update(anchors, pred.offset_var)
    var = pred.var - pred.offset_var + post_var
    return ScalePrediction(pred.mean + shift, var, pred.in_domain, pred.warning, post_var, pred.cap)


def delta_sd_from_interval(lower: float | None, upper: float | None, level: float = 0.95) -> float:
    """Measurement sd of log(ratio) from a ratio interval (normal approximation)."""
    if lower is None or upper is None or lower <= 0 or upper <= lower:
        return 0.0
    z = {0.9: 1.6449, 0.95: 1.96}.get(level, 1.96)
    return (math.log(upper) - math.log(lower)) / (2 * z)
