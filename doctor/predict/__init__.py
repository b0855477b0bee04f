"""The expectation: fitted predictors of degradation under compression and of baseline health.

`annotate(exam)` fills every featurizable checkup's `expected["ppl_ratio"]`, `exam.baseline.health` and
`exam.predictor` from the JSON artifacts in `predictors/` (fitted by `doctor predictor fit`).
"""

from __future__ import annotations

from doctor.predict.annotate import annotate
from doctor.predict.predict import Predictor

__all__ = ["Predictor", "annotate"]
