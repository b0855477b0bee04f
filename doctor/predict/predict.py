"""Predictions with 90% intervals from a fitted degradation artifact.

Outside the training domain the point estimate uses the nearest in-domain model size (extrapolating a size
trend over decades is not evidence) and the interval widens with the distance, and the Expected says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doctor.predict import features as F
from doctor.predict.artifact import DEGRADATION_FILE, load_artifact
from doctor.predict.calibrate import scale_of
from doctor.predict.cases import cases_for
from doctor.results import Expected, ModelFacts

LEVEL = 0.9
Z90 = 1.6448536269514722
WIDEN_SD_PER_UNIT = 0.5  # extra sd on the model scale per unit outside the domain (decade of size, bit, 0.1 sparsity)
MC_DRAWS = 4000


@dataclass(frozen=True)
class ScalePrediction:
    """A prediction on the model's scale t (features.to_scale): mean, variance, cap and domain verdict."""

    mean: float
    var: float
    in_domain: bool
    warning: str | None
    offset_var: float  # the part of var that is the unknown model/family offset (what adaptation updates)
    cap: float | None = None  # log(vocab / dense PPL) of this case

    @property
    def sd(self) -> float:
        return math.sqrt(self.var)

    def delta(self, z: float = 0.0) -> float:
        """The log PPL ratio at mean + z sd (never past the cap)."""
        return float(F.from_scale(self.mean + z * self.sd, self.cap))


@dataclass(frozen=True)
class RowPrediction:
    """Median and 90% bounds of delta (log PPL ratio) for one table row."""

    point: float
    lower: float
    upper: float
    in_domain: bool
    cap: float


def outside(case: F.Case, domain: dict[str, list[float]]) -> dict[str, float]:
    """Axis -> distance outside the training range, in that axis's units (empty when inside)."""
    out = {}
    for axis, value in F.domain_axes(case).items():
        if axis not in domain:
            out[axis] = 1.0  # e.g. bits for a method class, or a sparsity for a kind, with no training rows
            continue
        lo, hi = domain[axis]
        gap = max(lo - value, value - hi, 0.0) / F.axis_unit(axis)
        if gap > 1e-9:
            out[axis] = gap
    return out


def widening_var(gaps: dict[str, float]) -> float:
    """Variance added for extrapolation: an unknown offset growing linearly with the distance outside."""
    return (WIDEN_SD_PER_UNIT * sum(gaps.values())) ** 2


def _describe(case: F.Case, gaps: dict[str, float], domain: dict[str, list[float]]) -> str:
    parts = []
    for axis in gaps:
        value = F.domain_axes(case)[axis]
        if axis not in domain:
            parts.append(f"{axis} {value:.3g} (no training rows for this class)")
            continue
        lo, hi = domain[axis]
        if F.is_params_axis(axis):
            parts.append(f"{case.params_b * 1e9:.3g} parameters (training table: {10**lo:.3g}B-{10**hi:.3g}B "
                         f"for {case.kind})")
        else:
            parts.append(f"{axis} {value:.3g} (training table: {lo:.3g}-{hi:.3g})")
    return "outside the training domain: " + "; ".join(parts) + "; interval widened"


class Predictor:
    """A fitted degradation model (plain JSON) and, when present, the baseline-health model."""

    def __init__(self, model: dict, meta: dict, health: dict | None = None, name: str = DEGRADATION_FILE,
                 sha256: str = ""):
        from doctor.errors import DataError

        if model.get("encoding_version") != F.ENCODING_VERSION:
            raise DataError(f"{name}: fitted with feature encoding {model.get('encoding_version')}, this tool "
                            f"uses {F.ENCODING_VERSION}; refit with `doctor predictor fit`")
        self.model = model
        self.meta = meta
        self.health = health  # the baseline-health artifact's model part
        self.name = name
        self.sha256 = sha256
        self.coef = np.asarray(model["coef"], dtype=float)
        self.cov = np.asarray(model["cov"], dtype=float)
        self.methods = set(model.get("methods", []))
        unidentified = model.get("unidentified", {})
        self.prior_sd = np.array([float(unidentified.get(n, 0.0)) for n in model["features"]])

    @classmethod
    def load(cls, path: Path | str) -> Predictor:
        """A predictors folder (degradation.json, optional baseline-health.json beside it) or one file."""
        from doctor.predict.artifact import HEALTH_FILE, file_sha256

        path = Path(path)
        file = path / DEGRADATION_FILE if path.is_dir() else path
        artifact = load_artifact(file, expect="degradation")
        health_file = file.with_name(HEALTH_FILE)
        health = load_artifact(health_file, expect="baseline-health")["model"] if health_file.is_file() else None
        return cls(artifact["model"], artifact["meta"], health, name=file.name, sha256=file_sha256(file))

    def family_offset(self, family: str | None) -> tuple[float, float]:
        """(offset, its variance): the family's BLUP if trained on, else 0 with the family variance."""
        effect = self.model["family_effects"].get(family or "")
        if effect is not None:
            return float(effect[0]), float(effect[1])
        return 0.0, max(float(self.model["family_var"]), 0.0)

    def unknown_method(self, case: F.Case) -> str | None:
        """Why this case's method is outside the training table (None when some training row used it)."""
        name = case.method_name
        if name is None or name in self.methods:
            return None
        return F.mapping_note(name, case.kind, case.bits)

    def predict_case(self, case: F.Case) -> ScalePrediction:
        domain = self.model["domain"]
        gaps = outside(case, domain)
        x = F.encode(F.clamp_to_domain(case, domain))
        offset, offset_var = self.family_offset(case.family)
        resid = self.model["resid_var_by_kind"].get(F.variance_group(case), self.model["resid_var"])
        source = self.model.get("source_var_by_kind", {}).get(F.variance_group(case), 0.0)
        var = float(x @ self.cov @ x) + offset_var + resid + source + widening_var(gaps)
        notes = [_describe(case, gaps, domain)] if gaps else []
        unknown = [n for n, v, sd in zip(self.model["features"], x, self.prior_sd, strict=True) if sd and v]
        if unknown:  # effects the training table cannot estimate: their prior spread, not a silent zero
            var += float(np.sum((self.prior_sd * x) ** 2))
            notes.append("not identified by the training table: " + ", ".join(unknown) + "; interval widened")
        method_note = self.unknown_method(case)
        if method_note:
            var += float(self.model.get("unknown_method_sd", {}).get(case.kind, 1.0)) ** 2
            notes.append(method_note + "; interval widened")
        in_domain = not gaps and not unknown and not method_note
        mean = self.combined_mean(case, float(x @ self.coef) + offset, var)
        # calibrated on the training table's own held-out sources (calibrate.py); resid is scaled alike, so
        # the offset part below stays the same share of the variance
        scale2 = scale_of(self.model, F.variance_group(case)) ** 2
        var, resid = var * scale2, resid * scale2
        # everything but the residual noise is this model's unknown offset: what its mild checkups can tell
        return ScalePrediction(mean, var, in_domain, "; ".join(notes) or None,
                               var - resid, case.cap)

    def combined_mean(self, case: F.Case, mean: float, var: float) -> float:
        """Forecast combination (Bates and Granger, 1969): the model's mean and the training mean of t for this
        kind and bucket (else kind), weighted by inverse variance. A prediction that rests on little (unknown
        class, far outside the domain) leans on what the table says for its kind and bucket; a precise one keeps
        its own. The model's variance is kept: the table is not counted twice in the interval."""
        priors = self.model.get("bucket_prior", {})
        prior = priors.get(F.bucket_of(case)) or priors.get(case.kind)
        if prior is None or prior[1] <= 0:
            return mean
        prior_mean, prior_var = prior
        return (mean / var + prior_mean / prior_var) / (1.0 / var + 1.0 / prior_var)

    def predict_row(self, row: dict) -> RowPrediction:
        """Median and 90% bounds of delta for one training-table-layout row."""
        pred = self.predict_case(F.case_from_row(row))
        return RowPrediction(pred.delta(), pred.delta(-Z90), pred.delta(Z90), pred.in_domain,
                             F.cap_or_default(pred.cap))

    def predict_delta_samples(self, cases: list[F.Case], seed: int = 0) -> tuple[np.ndarray, list[ScalePrediction]]:
        """Monte Carlo draws of the summed delta of several leaves (a compose), treating them as independent."""
        rng = np.random.default_rng(seed)
        preds = [self.predict_case(c) for c in cases]
        draws = sum(F.from_scale(rng.normal(p.mean, p.sd, MC_DRAWS), p.cap) for p in preds)
        cap = min(F.cap_or_default(p.cap) for p in preds)
        return np.minimum(np.asarray(draws), cap), preds

    def predict(self, facts: ModelFacts, modification: dict, metric: str = "ppl_ratio", *,
                realized: dict | None = None, corpus: str | None = None, ctx: float | None = None) -> Expected:
        """Expected PPL ratio (point = median, 90% interval) for this model under this modification."""
        if metric != "ppl_ratio":
            raise ValueError(f"the degradation model predicts 'ppl_ratio', not '{metric}'")
        cases = cases_for(facts, modification, realized, corpus, ctx)
        if len(cases) == 1:
            return expected_from_scale(self.predict_case(cases[0]), metric, self.name)
        return self.expected_composed(cases, metric)

    def expected_composed(self, cases: list[F.Case], metric: str = "ppl_ratio") -> Expected:
        """Several leaves: quantiles of the summed delta draws (damage in log-ratio assumed additive)."""
        draws, preds = self.predict_delta_samples(cases)
        deltas = [float(q) for q in np.quantile(draws, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2])]
        notes = "; ".join(p.warning for p in preds if p.warning)
        warning = "composed from per-step predictions assuming additive log-ratio damage" + (
            f"; {notes}" if notes else "")
        return Expected(metric=metric, point=math.exp(deltas[1]), lower=math.exp(deltas[0]),
                        upper=math.exp(deltas[2]), level=LEVEL, in_domain=all(p.in_domain for p in preds),
                        warning=warning, predictor=self.name)


def expected_from_scale(pred: ScalePrediction, metric: str, name: str) -> Expected:
    """Point = median, 90% interval, in ratio units (exp of the log ratio)."""
    lo, mid, hi = (pred.mean - Z90 * pred.sd, pred.mean, pred.mean + Z90 * pred.sd)
    ratio = [math.exp(float(F.from_scale(t, pred.cap))) for t in (lo, mid, hi)]
    return Expected(metric=metric, point=ratio[1], lower=ratio[0], upper=ratio[2], level=LEVEL,
                    in_domain=pred.in_domain, warning=pred.warning, predictor=name)


def with_observation(expected: Expected, observed_ratio: float, pred: ScalePrediction | None) -> Expected:
    """Residual (observed - predicted log ratio), z on the model scale, and where the observation falls."""
    observed = math.log(observed_ratio)
    residual = observed - math.log(expected.point)
    z = (float(F.to_scale(observed, pred.cap)) - pred.mean) / pred.sd if pred is not None else None
    side = "above" if observed_ratio > expected.upper else "below" if observed_ratio < expected.lower else "inside"
    return replace_expected(expected, residual=residual, z=z, outside=side)


def replace_expected(expected: Expected, **changes: object) -> Expected:
    return expected.model_copy(update=changes)

