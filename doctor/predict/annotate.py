"""Fill an Examination's expectations: per checkup `expected["ppl_ratio"]`, baseline health, predictor facts."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from doctor.predict import features as F
from doctor.predict import history
from doctor.predict.accuracy import annotate_accuracy, load_accuracy
from doctor.predict.adapt import Anchor, adapt, delta_sd_from_interval, is_mild
from doctor.predict.cases import Unsupported, cases_for
from doctor.predict.health import assess
from doctor.predict.predict import Predictor, ScalePrediction, expected_from_scale, with_observation
from doctor.results import CheckupResult, Examination, Expected

log = logging.getLogger(__name__)
METRIC = "ppl_ratio"


@dataclass
class _Item:
    checkup: CheckupResult
    cases: list[F.Case]
    observed: float | None
    prior: ScalePrediction | None  # single-leaf checkups only


def _observed(checkup: CheckupResult) -> float | None:
    value = checkup.value(METRIC)
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _cap(exam: Examination) -> float | None:
    """log(vocab / dense PPL): the log ratio of uniform guessing, which bounds every expectation."""
    ppl = exam.baseline.metrics.get("ppl")
    return F.cap_of(exam.patient.vocab, ppl.value if ppl else None)


def _items(exam: Examination, skipped: dict[str, str]) -> list[_Item]:
    text = exam.baseline.text
    cap = _cap(exam)
    items = []
    for checkup in exam.checkups:
        if checkup.status != "ok":
            continue
        ctx = (checkup.text or text).seq_len
        try:
            cases = cases_for(exam.patient, checkup.modification, checkup.realized, text.corpus, ctx)
        except (Unsupported, KeyError, TypeError, ValueError) as exc:
            skipped[checkup.id] = str(exc) or type(exc).__name__
            continue
        calibration = F.corpus_of(checkup.calibration.corpus) if checkup.calibration else None
        cases = [replace(c, cap=cap, calibration=calibration) for c in cases]
        items.append(_Item(checkup, cases, _observed(checkup), None))
    return items


def _anchors(items: list[_Item]) -> list[tuple[str, Anchor]]:
    out = []
    for item in items:
        if item.prior is None or item.observed is None or not is_mild(item.cases[0]):
            continue
        m = item.checkup.metrics[METRIC]
        sd = delta_sd_from_interval(m.lower, m.upper)
        out.append((item.checkup.id, Anchor(item.prior, math.log(item.observed), sd)))
    return out


def _expected_for(item: _Item, predictor: Predictor, anchors: list[tuple[str, Anchor]]) -> Expected:
    if item.prior is None:
        expected = predictor.expected_composed(item.cases, METRIC)
        return with_observation(expected, item.observed, None) if item.observed else expected
    own = [a for cid, a in anchors if cid != item.checkup.id]
    prior = expected_from_scale(item.prior, METRIC, predictor.name)
    final_pred = item.prior
    expected = prior
    if own and item.checkup.id not in {cid for cid, _ in anchors}:
        final_pred = adapt(item.prior, own)
        expected = expected_from_scale(final_pred, METRIC, predictor.name).model_copy(
            update={"prior_point": prior.point, "prior_lower": prior.lower, "prior_upper": prior.upper})
    return with_observation(expected, item.observed, final_pred) if item.observed else expected


def _cap_ratio(expected: Expected, cap: float | None) -> Expected:
    """No expectation above the uniform-guess ratio (vocab / dense PPL): beyond it the interval says nothing.
    The bounded target keeps single checkups below it already; this also bounds composed ones."""
    if cap is None or cap <= 1.0 or expected.upper <= cap * (1 + 1e-9):
        return expected
    update = {k: min(getattr(expected, k), cap) for k in ("point", "upper", "prior_point", "prior_upper")
              if getattr(expected, k) is not None}
    note = f"upper bound capped at the uniform-guess ratio {cap:.3g} (vocab / dense perplexity)"
    update["warning"] = f"{expected.warning}; {note}" if expected.warning else note
    return expected.model_copy(update=update)


def _health(exam: Examination, predictor: Predictor) -> dict:
    if predictor.health is None:
        return {"verdict": "not-assessed", "warning": "no baseline-health predictor (baseline-health.json)"}
    ppl = exam.baseline.metrics.get("ppl")
    text = exam.baseline.text
    return assess(predictor.health, exam.patient, text.corpus, text.seq_len, ppl.value if ppl else None)


def annotate(exam: Examination, predictor_dir: Path | None = None) -> None:
    """Expected PPL ratio (with prior_* when adapted) for every featurizable ok checkup, expected accuracy
    drops (`acc_drop:<task>`, when accuracy-drop.json is present), baseline health, and `exam.predictor`
    (artifact, sha256, version, skipped checkups, adaptation anchors)."""
    from doctor.resources import PREDICTORS_DIR

    predictor = Predictor.load(predictor_dir or PREDICTORS_DIR)
    skipped: dict[str, str] = {}
    items = _items(exam, skipped)
    for item in items:
        if len(item.cases) == 1:
            item.prior = predictor.predict_case(item.cases[0])
    # a checkup on an already-quantized patient says nothing about a fresh model's offset: never an anchor
    anchors = _anchors([i for i in items if history.relation(exam.patient, i.cases) is None])
    ppl = exam.baseline.metrics.get("ppl")
    cap = exam.patient.vocab / ppl.value if ppl and ppl.value > 0 and exam.patient.vocab > 0 else None
    for item in items:
        expected = _expected_for(item, predictor, anchors)
        if history.relation(exam.patient, item.cases) is not None:
            expected = history.compounded(exam.patient, item.cases[0], predictor, expected)
            expected = with_observation(expected, item.observed, None) if item.observed else expected
        expected = _cap_ratio(expected, cap)
        if item.observed:  # where the observation falls, against the (capped) bounds
            side = ("above" if item.observed > expected.upper else "below" if item.observed < expected.lower
                    else "inside")
            expected = expected.model_copy(update={"outside": side})
        item.checkup.expected[METRIC] = expected
    exam.baseline.health = _health(exam, predictor)
    accuracy = load_accuracy(predictor_dir or PREDICTORS_DIR)
    n_acc = annotate_accuracy(exam, accuracy, skipped) if accuracy else 0
    exam.predictor = {
        "artifact": predictor.name, "sha256": predictor.sha256,
        "version": predictor.meta.get("format_version"), "created": predictor.meta.get("created"),
        "training_tables": predictor.meta.get("training_tables", {}),
        "adaptation": {"anchors": [cid for cid, _ in anchors]}, "skipped": skipped,
    }
    if accuracy:
        exam.predictor["accuracy_artifact"] = {"artifact": accuracy.name, "sha256": accuracy.sha256,
                                              "expectations": n_acc}
    log.info("predictor: %d checkups annotated, %d skipped, %d anchors", len(items), len(skipped), len(anchors))
