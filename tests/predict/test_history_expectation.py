"""Expectations for an already-quantized patient: near-lossless at or above its grid, compounding below it."""

from __future__ import annotations

import pytest
from predict_builders import checkup, examination, facts

from doctor.predict import annotate
from doctor.predict.history import AT_OR_ABOVE, BELOW, effective_bits
from doctor.resources import PREDICTORS_DIR


def rtn(bits, group=None):
    return {"kind": "quantize", "method": "rtn", "bits": bits, "group_size": group}


def smollm_like(prior_bits=4, prior_group=32):
    f = facts(134_515_008, "SmolLM2-135M-Instruct.Q4_1", family="SmolLM2", layers=30, hidden=576, tokens=2e12)
    return f.model_copy(update={"vocab": 49152, "prior_bits": prior_bits, "prior_group_size": prior_group})


def annotated(patient, ratios):
    exam = examination(patient, [checkup(cid, mod, ratio) for cid, (mod, ratio) in ratios.items()], ppl=27.0)
    annotate(exam, PREDICTORS_DIR)
    return exam, {c.id: c.expected["ppl_ratio"] for c in exam.checkups}


def test_noise_variances_add():
    assert effective_bits(4, 4) == pytest.approx(3.5)
    assert effective_bits(8, 4) == pytest.approx(4.0, abs=0.01)
    assert effective_bits(3, 4) < 3


def test_grid_at_or_above_is_near_lossless_and_below_compounds():
    exam, e = annotated(smollm_like(), {
        "rtn-w8": (rtn(8), 1.001), "rtn-w4-g32": (rtn(4, 32), 1.0), "rtn-w4-g16": (rtn(4, 16), 1.0),
        "rtn-w4-g128": (rtn(4, 128), 1.40), "rtn-w3-g128": (rtn(3, 128), 5.45), "rtn-w5-g64": (rtn(5, 64), 1.05),
    })  # fmt: skip
    for cid in ("rtn-w4-g32", "rtn-w4-g16"):
        assert e[cid].history == AT_OR_ABOVE and (e[cid].lower, e[cid].point) == (1.0, 1.0)  # can re-express it
        assert e[cid].upper == e[cid].fresh_upper  # at most a fresh model's loss when scales do not align
    for cid in ("rtn-w8", "rtn-w4-g128", "rtn-w3-g128", "rtn-w5-g64"):
        assert e[cid].history == BELOW  # w8 per row: groups that do not nest in g32
        assert e[cid].point == e[cid].fresh_point  # to second order, losses add: a fresh model's point
        assert e[cid].upper >= e[cid].fresh_upper  # beyond it the loss is convex: the upper end can only grow
    assert e["rtn-w8"].upper < 1.1  # adds almost nothing to a 4-bit grid
    assert e["rtn-w3-g128"].upper > e["rtn-w3-g128"].fresh_upper  # below 4 bits the fitted curve bends upward
    assert e["rtn-w3-g128"].point > e["rtn-w4-g128"].point > e["rtn-w5-g64"].point
    for x in e.values():
        assert not x.in_domain and "already quantized" in x.warning
        assert x.lower <= x.point <= x.upper and x.fresh_lower <= x.fresh_point <= x.fresh_upper
    assert exam.predictor["adaptation"]["anchors"] == []  # history checkups never calibrate a fresh offset


def test_unquantized_patient_keeps_the_fresh_expectation():
    _, e = annotated(smollm_like(None, None), {"rtn-w4-g128": (rtn(4, 128), 1.40)})
    assert e["rtn-w4-g128"].history is None and e["rtn-w4-g128"].fresh_point is None
