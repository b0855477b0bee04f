"""Expectations for a patient that was already quantized: a new grid compounds with the one it already lies on.

The literature table holds unquantized models, so its prediction for "w4 g128" is for a fresh checkpoint, not
for a Q4_1 one. Rounding noises are independent and their variances add (a uniform rounding error has variance
step^2 / 12, step proportional to 2^-bits). To second order (the quadratic loss model of OBS and GPTQ) losses
then add too, so against the dequantized baseline the new grid costs what it costs a fresh model: the point is
the fresh prediction. Beyond second order the loss is convex in the noise (the low-bit cliff), so the upper end
also takes the fitted curve along bits on the new grid's layout: both noises as one grid of
b_eff = -log4(4^-b_new + 4^-b_prior) bits, minus the existing grid's own loss, at the same quantile of the
model's unknown offset. A grid at or above the existing one (at least as many bits, groups that nest in the old
ones) can re-express the weights exactly when its scales and zero points land on the old ones: near-lossless,
point and lower bound 1, the fresh upper bound kept for when they do not align (min-max RTN with an integer zero
point on a Q4_1 grid, whose offsets are floats).
"""

from __future__ import annotations

import math
from dataclasses import replace

from doctor.predict import features as F
from doctor.predict.predict import Z90, Predictor
from doctor.results import Expected, ModelFacts

AT_OR_ABOVE, BELOW = "at-or-above", "below"


def _group(size: float | None) -> float:
    """Inputs per group; a whole row (per-channel, written None or -1) as infinity."""
    return math.inf if size is None or size <= 0 else float(size)


def relation(facts: ModelFacts, cases: list[F.Case]) -> str | None:
    """How a single quantization checkup's grid relates to the patient's existing one (None: not applicable)."""
    if facts.prior_bits is None or len(cases) != 1 or cases[0].kind != "quantization" or cases[0].bits is None:
        return None
    case = cases[0]
    new_g, old_g = _group(case.group_size), _group(facts.prior_group_size)
    nests = new_g <= old_g and (math.isinf(old_g) or (not math.isinf(new_g) and old_g % new_g == 0))
    return AT_OR_ABOVE if case.bits >= facts.prior_bits and nests else BELOW


def effective_bits(new_bits: float, prior_bits: float) -> float:
    return -math.log(4.0 ** -new_bits + 4.0 ** -prior_bits, 4)


def compounded(facts: ModelFacts, case: F.Case, predictor: Predictor, fresh: Expected) -> Expected:
    """The expectation against the already-quantized baseline; `fresh` (the unquantized-model one) is kept."""
    kind = relation(facts, [case])
    prior_bits = float(facts.prior_bits)
    prior_group = None if facts.prior_group_size in (None, -1) else float(facts.prior_group_size)
    both = predictor.predict_case(replace(case, bits=effective_bits(case.bits, prior_bits)))
    alone = predictor.predict_case(replace(case, method="rtn", method_name="rtn", bits=prior_bits))
    convex = math.exp(max(both.delta(Z90) - alone.delta(Z90), 0.0))
    lower, point, upper = fresh.lower, fresh.point, max(fresh.upper, convex)
    grid = f"~{facts.prior_bits}-bit {'per-row' if prior_group is None else f'g{int(prior_group)}'}"
    if kind == AT_OR_ABOVE:
        lower, point, upper = 1.0, 1.0, fresh.upper
        note = (f"already quantized ({grid}); this grid can re-express it: near-lossless where its scales and zero "
                "points align with the existing ones, at most a fresh model's loss where they do not")
    else:
        note = (f"already quantized ({grid}); the noises add: point as for a fresh model (second order), upper bound "
                f"from the fitted curve at {effective_bits(case.bits, prior_bits):.2f} combined bits")
    warnings = "; ".join(w for w in (note, fresh.warning) if w)
    return fresh.model_copy(update={
        "point": point, "lower": lower, "upper": max(upper, point), "in_domain": False, "warning": warnings,
        "history": kind, "fresh_point": fresh.point, "fresh_lower": fresh.lower, "fresh_upper": fresh.upper,
        "residual": None, "z": None, "outside": None, "prior_point": None, "prior_lower": None, "prior_upper": None,
    })
