"""Expectations for a patient that was already quantized: a new grid compounds with the one it already lies on.

The literature table holds unquantized models, so its prediction for "w4 g128" answers the wrong question for a
Q4_1 checkpoint. Quantization noise variances add (a uniform rounding error has variance step^2 / 12, step
proportional to 2^-bits). So the new grid's damage on a fresh model is first expressed as an equivalent RTN bit
width b' on the existing grid's group layout (the b' at which the fitted model predicts the same loss), the two
noises are added as b_eff = -log4(4^-b_prior + 4^-b'), and against the dequantized baseline the expected log
ratio is delta(b_eff) - delta(b_prior) on that layout. Everything is taken at the same quantile of the model's
unknown offset, which moves all these predictions the same way. A coarser grid compounds; a much finer one
(w8 on a 4-bit grid) adds almost nothing. A grid at or above the existing one (at least as many bits, groups
that nest in the old ones) can re-express the weights exactly when its scales and zero points land on the old
ones, so its lower bound is 1 (lossless); when they do not (min-max RTN with an integer zero point on a Q4_1
grid, whose offsets are floats) its rounding noise adds like any grid's, which the point and upper bound keep.
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


def equivalent_bits(delta_new: float, layout: F.Case, predictor: Predictor, z: float) -> float:
    """The RTN bit width on `layout`'s groups with the same predicted loss (bisection; the loss falls with bits)."""
    lo, hi = 1.0, 16.0

    def loss(bits: float) -> float:
        return predictor.predict_case(replace(layout, bits=bits)).delta(z)

    if delta_new >= loss(lo):
        return lo
    if delta_new <= loss(hi):
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if loss(mid) > delta_new else (lo, mid)
    return (lo + hi) / 2


def _compound(case: F.Case, layout: F.Case, prior_bits: float, predictor: Predictor, z: float) -> float:
    """Expected log ratio against the dequantized baseline at quantile z of the unknown offset."""
    new = predictor.predict_case(case).delta(z)
    same_layout = equivalent_bits(new, layout, predictor, z)
    total = predictor.predict_case(replace(layout, bits=effective_bits(same_layout, prior_bits))).delta(z)
    return max(total - predictor.predict_case(replace(layout, bits=prior_bits)).delta(z), 0.0)


def compounded(facts: ModelFacts, case: F.Case, predictor: Predictor, fresh: Expected) -> Expected:
    """The expectation against the already-quantized baseline; `fresh` (the unquantized-model one) is kept."""
    kind = relation(facts, [case])
    prior_bits = float(facts.prior_bits)
    prior_group = None if facts.prior_group_size in (None, -1) else float(facts.prior_group_size)
    layout = replace(case, method="rtn", method_name="rtn", group_size=prior_group)
    lower, point, upper = (math.exp(_compound(case, layout, prior_bits, predictor, z)) for z in (-Z90, 0.0, Z90))
    grid = f"~{facts.prior_bits}-bit {'per-row' if prior_group is None else f'g{int(prior_group)}'}"
    if kind == AT_OR_ABOVE:
        lower = 1.0
        note = (f"already quantized ({grid}); this grid can re-express it (lossless) where its scales and zero points "
                "align with the existing ones, else its rounding noise compounds")
    else:
        note = (f"already quantized ({grid}); noise compounds: the new grid's loss as RTN bits on the existing groups, "
                "noise variances added, minus the existing grid's own loss (same fitted model)")
    warnings = "; ".join(w for w in (note, fresh.warning) if w)
    return fresh.model_copy(update={
        "point": point, "lower": lower, "upper": max(upper, point), "in_domain": False, "warning": warnings,
        "history": kind, "fresh_point": fresh.point, "fresh_lower": fresh.lower, "fresh_upper": fresh.upper,
        "residual": None, "z": None, "outside": None, "prior_point": None, "prior_lower": None, "prior_upper": None,
    })
