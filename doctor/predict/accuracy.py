"""Accuracy-drop model: expected drop (percentage points) of a zero-shot accuracy under one modification.

Trained on the published rows that report an accuracy with a same-source dense value (zero-shot averages of
PIQA/ARC/HellaSwag/WinoGrande/... as in AutoRound, OmniQuant and LLM-Pruner; single ARC/PIQA rows from QuIP#,
llama.cpp-based Model-Hemorrhage). Target: drop = baseline - value in pp, modelled on t = log(drop + C) like
the perplexity model (loss falls roughly exponentially in bits; Kumar et al., arXiv 2411.04330). The table
has a handful of families, too few for a family variance, so the fit is ordinary least squares on a small
subset of the degradation features, with the residual variance per kind; leave-one-family-out evaluation
(`held_out_accuracy`) is the check that the interval is honest for a new family.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from doctor.errors import DataError
from doctor.predict import features as F
from doctor.predict.cases import Unsupported, cases_for
from doctor.predict.fit import (
    domain_of,
    independent_columns,
    kind_variances,
    typical_effects,
    unidentified_sd,
    unknown_method_sd,
)
from doctor.predict.predict import LEVEL, Z90, ScalePrediction, _describe, outside, widening_var
from doctor.predict.table import act_bits_of, context_of, family_fact, is_combined
from doctor.results import Examination, Expected

ACCURACY_FILE = "accuracy-drop.json"
ACC_METRICS = ("zero_shot_avg_acc", "arc_challenge", "arc_easy", "piqa")
C = 1.0  # pp floor of the transform: below ~1 pp, benchmark sampling noise dominates
FEATURES = ("const", "lp", "single_task", "k_structured", "q_bits", "q_cliff", "q_per_channel", "q_log_group",
            "q_gptq", "q_awq", "q_learned", "q_gguf", "q_codebook", "s_s", "s_gradient", "s_random")
_SHARED = [F.FEATURES.index(n) for n in FEATURES if n in F.FEATURES]
_KINDS = ("quantization", "structured")  # the kinds with published accuracy drops
REFUSE_UNITS = 1.0  # beyond one unit outside the domain (a decade of size, a bit, 0.1 sparsity): no expectation
TASK_NOTE = ("the published accuracy drops are mostly zero-shot averages over several tasks (PIQA, ARC, "
             "HellaSwag, WinoGrande, ...); this task differs")


def to_scale(drop: np.ndarray | float) -> np.ndarray | float:
    """Drop in pp -> model scale; gains larger than C/2 are benchmark noise and clipped."""
    return np.log(np.maximum(drop, -C / 2) + C)


def from_scale(t: np.ndarray | float) -> np.ndarray | float:
    return np.exp(t) - C


def encode(case: F.Case, single_task: bool = False) -> np.ndarray:
    """The degradation model's design row restricted to FEATURES, plus the single-task indicator."""
    full = dict(zip(F.FEATURES, F.encode(case), strict=True))
    full["single_task"] = float(single_task)
    return np.array([full[n] for n in FEATURES])


def accuracy_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Compressed weight-only rows with an accuracy metric and a same-row dense value; `delta` = drop in pp."""
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[(frame.method != "fp16") & frame.metric.isin(ACC_METRICS) & frame.baseline_value.notna()]
    frame = frame[frame.kind.isin(_KINDS)]
    single = np.array([not is_combined(r) for r in frame.to_dict("records")], dtype=bool)
    frame = frame[single & (frame.notes.map(act_bits_of).to_numpy(dtype=float) >= 16)].copy()
    frame["delta"] = frame.baseline_value - frame.value
    frame["ctx"] = frame.notes.map(context_of)
    facts = [family_fact(f, m) for f, m in zip(frame.model_family, frame.model, strict=True)]
    frame["training_tokens"] = [f.training_tokens if f and f.training_tokens else math.nan for f in facts]
    return frame.reset_index(drop=True)


def _design(frame: pd.DataFrame) -> tuple[list[F.Case], np.ndarray]:
    rows = frame.to_dict("records")
    cases = [F.case_from_row(r) for r in rows]
    x = np.vstack([encode(c, r["metric"] != "zero_shot_avg_acc") for c, r in zip(cases, rows, strict=True)])
    return cases, x


def enough_rows(frame: pd.DataFrame) -> bool:
    """Whether a table supports the fit (two rows per coefficient)."""
    return len(frame) >= 2 * len(FEATURES)


def fit_accuracy(frame: pd.DataFrame) -> dict:
    """OLS on the model scale. A column this table cannot identify is listed in `unidentified` with a prior sd
    (a method-class effect takes the median identified class of its block), as in the degradation model."""
    import statsmodels.api as sm

    if not enough_rows(frame):
        raise DataError(f"accuracy predictor fit: {len(frame)} usable rows, need at least {2 * len(FEATURES)}")
    cases, x = _design(frame)
    y = np.asarray(to_scale(frame["delta"].to_numpy(dtype=float)))
    keep = independent_columns(x)
    result = sm.OLS(y, x[:, keep]).fit()
    coef = np.zeros(len(FEATURES))
    cov = np.zeros((len(FEATURES), len(FEATURES)))
    coef[keep] = result.params
    cov[np.ix_(keep, keep)] = result.cov_params()
    resid = y - x @ coef
    groups = [str(g) for g in frame.model_family]
    missing = [FEATURES[j] for j in range(len(FEATURES)) if j not in set(keep.tolist())]
    names = list(FEATURES)
    return {
        "target": "log(baseline_acc - acc [pp] + c)", "c": C, "encoding_version": F.ENCODING_VERSION,
        "metrics": list(ACC_METRICS), "features": names,
        "coef": typical_effects(names, coef, missing).tolist(), "cov": cov.tolist(),
        "unidentified": unidentified_sd(names, coef, cov, missing),
        "unknown_method_sd": unknown_method_sd(names, coef, missing),
        "methods": sorted({c.method_name for c in cases if c.method_name}),
        "resid_var": float(result.scale),
        "resid_var_by_kind": kind_variances(resid, [c.kind for c in cases], float(result.scale)),
        "domain": domain_of(cases),
        "training": {
            "rows": len(frame), "families": sorted(set(groups)),
            "rows_by_kind": {k: int(v) for k, v in frame.groupby("kind").size().items()},
            "rows_by_metric": {k: int(v) for k, v in frame.groupby("metric").size().items()},
            "residual_sd": math.sqrt(float(result.scale)), "fit": "OLS (too few families for a family effect)",
        },
    }


class AccuracyPredictor:
    """A fitted accuracy-drop model (the `model` part of accuracy-drop.json)."""

    def __init__(self, model: dict, name: str = ACCURACY_FILE, sha256: str = ""):
        self.model = model
        self.name = name
        self.sha256 = sha256
        self.coef = np.asarray(model["coef"], dtype=float)
        self.cov = np.asarray(model["cov"], dtype=float)
        unidentified = model.get("unidentified", {})
        self.prior_sd = np.array([float(unidentified.get(n, 0.0)) for n in model["features"]])
        self.methods = set(model.get("methods", []))

    def predict_case(self, case: F.Case, single_task: bool = False) -> ScalePrediction:
        """Like the degradation model's: outside the domain, an unidentified coefficient in use, or a method
        name no accuracy row has are each out of domain, said in the warning, and widen the interval."""
        domain = self.model["domain"]
        gaps = outside(case, domain)
        x = encode(F.clamp_to_domain(case, domain), single_task)
        resid = self.model["resid_var_by_kind"].get(case.kind, self.model["resid_var"])
        var = float(x @ self.cov @ x) + resid + widening_var(gaps)
        notes = [_describe(case, gaps, domain)] if gaps else []
        unknown = [n for n, v, sd in zip(self.model["features"], x, self.prior_sd, strict=True) if sd and v]
        if unknown:
            var += float(np.sum((self.prior_sd * x) ** 2))
            notes.append("not identified by the accuracy rows: " + ", ".join(unknown) + "; interval widened")
        method_note = None
        if case.method_name is not None and case.method_name not in self.methods:
            method_note = F.mapping_note(case.method_name, case.kind, case.bits)
            var += float(self.model.get("unknown_method_sd", {}).get(case.kind, 1.0)) ** 2
            notes.append(f"no accuracy row for this method: {method_note}; interval widened")
        in_domain = not gaps and not unknown and not method_note
        return ScalePrediction(float(x @ self.coef), var, in_domain, "; ".join(notes) or None, var - resid)

    def refusal(self, case: F.Case) -> str | None:
        """Why no accuracy expectation is given for this case (far outside the domain), None when one is."""
        gaps = outside(case, self.model["domain"])
        if sum(gaps.values()) > REFUSE_UNITS:
            return "accuracy drop not predicted: " + _describe(case, gaps, self.model["domain"]).replace(
                "; interval widened", "")
        return None

    def expected(self, case: F.Case, metric: str, observed: float | None = None, scale: float = 0.01,
                 note: str | None = None, max_drop: float | None = None) -> Expected:
        """Expected drop (median, 90% interval) in units of `scale` pp-fractions (0.01: fraction of 1), at most
        `max_drop` (dense accuracy minus chance, same units); with an observation (same units): residual, z on
        the model scale, where it falls."""
        pred = self.predict_case(case)
        lo, mid, hi = (float(from_scale(t)) * scale for t in
                       (pred.mean - Z90 * pred.sd, pred.mean, pred.mean + Z90 * pred.sd))
        if max_drop is not None and hi > max_drop:  # a model cannot do worse than guessing
            lo, mid, hi = (min(v, max_drop) for v in (lo, mid, hi))
            note = "; ".join(w for w in (note, f"capped at dense accuracy minus chance ({max_drop:.3g})") if w)
        warning = "; ".join(w for w in (pred.warning, note) if w) or None
        out = Expected(metric=metric, point=mid, lower=lo, upper=hi, level=LEVEL, in_domain=pred.in_domain,
                       warning=warning, predictor=self.name)
        if observed is None or not math.isfinite(observed):
            return out
        z = (float(to_scale(observed / scale)) - pred.mean) / pred.sd
        side = "above" if observed > hi else "below" if observed < lo else "inside"
        return out.model_copy(update={"residual": observed - mid, "z": z, "outside": side})


def held_out_accuracy(frame: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Leave-one-family-out (or -source-out): per row the observed drop, model median, 90% bounds and the
    naive medians (pp)."""
    from doctor.predict.evaluate import GROUPINGS, bucket, finish, naive_predictions

    column = GROUPINGS[by]
    parts = []
    for group in sorted(frame[column].unique()):
        train, test = frame[frame[column] != group], frame[frame[column] == group]
        if not enough_rows(train):
            continue
        predictor = AccuracyPredictor(fit_accuracy(train))
        preds = [predictor.predict_case(F.case_from_row(r), r["metric"] != "zero_shot_avg_acc")
                 for r in test.to_dict("records")]
        mean, sd = np.array([p.mean for p in preds]), np.array([p.sd for p in preds])
        dense = test.baseline_value.to_numpy(dtype=float)  # no drop past the dense accuracy (chance: unknown)
        parts.append(pd.DataFrame({
            "held_out": group, "source": test.source.to_numpy(), "family": test.model_family.to_numpy(),
            "kind": test.kind.to_numpy(), "method": test.method.to_numpy(),
            "bucket": [bucket(r) for r in test.to_dict("records")],
            "delta": test.delta.to_numpy(dtype=float), "pred": np.minimum(from_scale(mean), dense),
            "lower": np.minimum(from_scale(mean - Z90 * sd), dense),
            "upper": np.minimum(from_scale(mean + Z90 * sd), dense),
            "naive_kind": naive_predictions(train, test, by_bucket=False),
            "naive_bucket": naive_predictions(train, test), "in_domain": [p.in_domain for p in preds],
            "cap": dense,
        }))
    return finish(pd.concat(parts, ignore_index=True))


def load_accuracy(folder: Path) -> AccuracyPredictor | None:
    """The accuracy-drop artifact in a predictors folder (or beside a degradation.json); None when absent."""
    from doctor.predict.artifact import file_sha256, load_artifact

    folder = Path(folder)
    file = (folder if folder.is_dir() else folder.parent) / ACCURACY_FILE
    if not file.is_file():
        return None
    return AccuracyPredictor(load_artifact(file, expect="accuracy-drop")["model"], file.name, file_sha256(file))


def annotate_accuracy(exam: Examination, predictor: AccuracyPredictor, skipped: dict[str, str]) -> int:
    """Fill `expected["acc_drop:<task>"]` (fraction scale, like the measurement) on every ok single-leaf
    checkup with an accuracy drop; returns how many expectations were written."""
    written = 0
    for checkup in exam.checkups:
        keys = [k for k in checkup.metrics if k.startswith("acc_drop:")]
        if checkup.status != "ok" or not keys:
            continue
        try:
            cases = cases_for(exam.patient, checkup.modification, checkup.realized)
        except (Unsupported, KeyError, TypeError, ValueError) as exc:
            skipped.setdefault(checkup.id, str(exc) or type(exc).__name__)
            continue
        if len(cases) != 1 or cases[0].kind not in predictor.model["training"]["rows_by_kind"]:
            skipped[f"{checkup.id}:acc_drop"] = "no published accuracy drops for this modification"
            continue
        refusal = predictor.refusal(cases[0])
        if refusal:
            skipped[f"{checkup.id}:acc_drop"] = refusal
            continue
        for key in keys:
            value = checkup.metrics[key].value
            checkup.expected[key] = predictor.expected(cases[0], key, value, scale=0.01, note=TASK_NOTE,
                                                       max_drop=max_drop(exam, key[len("acc_drop:"):]))
            written += 1
    return written


def chance_of(task_name: str) -> float:
    """Mean chance accuracy (1 / choices) of a task's multiple-choice items; 0 when the task cannot be read."""
    from doctor.errors import DataError
    from doctor.tasks.format import load_task

    try:
        items = load_task(task_name).multiple_choice
    except (DataError, OSError):
        return 0.0
    return float(np.mean([1.0 / len(i.choices) for i in items])) if items else 0.0


def max_drop(exam: Examination, task_name: str) -> float | None:
    """Dense accuracy minus chance (fraction scale): the largest drop a model that still answers can show."""
    dense = exam.baseline.metrics.get(f"acc:{task_name}")
    if dense is None or dense.value is None or not math.isfinite(dense.value):
        return None
    return max(dense.value - chance_of(task_name), 0.0)
