"""One checkup: apply the modification, measure, restore; any failure becomes a recorded result."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from doctor.errors import DoctorError
from doctor.evaluation import BaselineCache, PassResult, compare_pass
from doctor.metrics.language import against_baseline
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.patient import Patient, count_params
from doctor.results import CheckupResult, LayerStat, Measurement, TextInfo, ThresholdVerdict
from doctor.spec.checkup import METRIC_GROUPS, Checkup, EvalSpec
from doctor.tasks.format import DEFAULT_TASKS

log = logging.getLogger(__name__)


@dataclass
class Session:
    """Everything measured once per examination and shared by its checkups."""

    patient: Patient
    eval_spec: EvalSpec
    windows: torch.Tensor  # (windows, seq_len)
    text: TextInfo
    base_pass: PassResult
    cache: BaselineCache
    calibration: Any  # CalibrationProvider
    make_backend: Any  # () -> Backend for the current model state
    out_dir: Path
    probe: Any = None  # doctor.metrics.layerwise.LayerProbe, when a checkup asks for layer metrics
    pass_s: float = 0.0  # seconds of the baseline's evaluation pass, to price extra passes
    baseline_tasks: dict[str, Measurement] = field(default_factory=dict)
    progress: Any = lambda message: None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def window_progress(progress, label: str, total: int):
    """A per-batch callback that reports "<label> i/N windows": evaluation passes are the long work."""
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        progress(f"{label} {done}/{total} windows")

    return step


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, DoctorError) else f"{type(exc).__name__}: {first}"


def jsonable(value: Any) -> Any:
    """Realized facts as JSON-safe values (tensors and numpy scalars become numbers)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_checkup(session: Session, checkup: Checkup) -> CheckupResult:
    result = CheckupResult(
        id=checkup.id,
        description=checkup.description,
        modification=checkup.modification.model_dump(mode="json"),
        severity=checkup.severity,
        tags=list(checkup.tags),
        text=session.text,
        started=now_iso(),
    )
    start = time.perf_counter()
    ctx = ApplyContext(
        patient=session.patient, undo=UndoLog(), calibration=session.calibration, out_dir=session.out_dir,
        progress=session.progress,
    )
    generation = None
    try:
        session.progress(f"{checkup.id}: applying {checkup.modification.kind}")
        applied = apply_modification(checkup.modification, ctx)
        result.realized = jsonable(applied.realized)
        result.layers = applied.layers
        result.calibration = applied.calibration
        backend = ctx.state.get("backend") or session.make_backend()
        result.backend, result.provider = backend.name, backend.provider
        session.progress(f"{checkup.id}: measuring")
        result.metrics = measure(session, checkup, backend, ctx, result)
        if "generation" in checkup.metrics:
            from doctor.metrics.generation import generate_samples

            generation = generate_samples(session.patient, ctx.state.get("decode"), list(checkup.tasks))
    except Exception as exc:  # a failed checkup is a result, never a crash of the examination
        log.debug("checkup %s failed", checkup.id, exc_info=True)
        result.status, result.verdict, result.error = "error", "error", one_line(exc)
    finally:
        ctx.undo.restore()
    if generation is not None and result.status == "ok":
        from doctor.metrics.generation import generation_metrics

        result.metrics.update(generation_metrics(generation, session.patient))
    if result.status == "ok":
        result.thresholds = judge(checkup, result.metrics)
        result.verdict = "pass" if all(t.passed for t in result.thresholds) else "fail"
    result.duration_s = round(time.perf_counter() - start, 3)
    return result


def measure(session: Session, checkup: Checkup, backend, ctx: ApplyContext, result: CheckupResult) -> dict:
    spec = session.eval_spec
    metrics: dict[str, Measurement] = {}
    groups = set(checkup.metrics)
    if groups & {"perplexity", "kl"}:
        current = compare_pass(
            backend, session.windows, session.cache, session.patient.facts.vocab,
            batch_size=spec.batch_size, with_kl="kl" in groups,
            progress=window_progress(session.progress, f"{checkup.id}: measuring", session.windows.shape[0]),
        )
        wanted = {k for g in groups & {"perplexity", "kl"} for k in METRIC_GROUPS[g]}
        measured = against_baseline(session.base_pass, current, spec.bootstrap, spec.seed)
        metrics.update({k: v for k, v in measured.items() if k in wanted})
    if groups & {"layer_error", "attention"} and session.probe is not None:
        probe_start = time.perf_counter()
        measured = session.probe.compare(session.patient.model, ctx.undo.originals())
        if session.pass_s > 0:
            metrics["layer_probe_passes"] = Measurement(
                value=(time.perf_counter() - probe_start) / session.pass_s,
                note="the layer probe's extra forward passes (eager attention, up to 4 windows) in evaluation passes",
            )
        result.layers = merge_layers(result.layers, measured)
        metrics.update(layer_summary(result.layers))
    if "tasks" in groups:
        from doctor.tasks import measure_tasks

        tasks = measure_tasks(session.patient, backend, list(checkup.tasks) or list(DEFAULT_TASKS),
                              ctx.state.get("decode"))
        metrics.update(tasks)
        metrics.update(accuracy_drops(tasks, session.baseline_tasks))
    if "size" in groups:
        metrics.update(size_metrics(session, backend, result.realized))
    if "latency" in groups:
        from doctor.metrics.deployment import against_torch, measure_latency

        metrics["latency_ms"] = measure_latency(backend, session.windows[:1], repeats=5)
        if backend.name != "torch":
            metrics.update(against_torch(backend, session.patient.model, session.windows[: spec.batch_size],
                                         metrics["latency_ms"]))
    return metrics


def merge_layers(applied: list[LayerStat], measured: list[LayerStat]) -> list[LayerStat]:
    """Measured per-layer error wins `rel_error`; the modification's own numbers move to `extra`."""
    by_layer = {s.layer: s for s in measured}
    for stat in applied:
        target = by_layer.setdefault(stat.layer, LayerStat(layer=stat.layer, name=stat.name))
        if stat.rel_error is not None:
            target.extra["solver_error"] = stat.rel_error
        if stat.sparsity is not None:
            target.sparsity = stat.sparsity
        if stat.seconds is not None:
            target.seconds = stat.seconds
        target.extra.update(stat.extra)
    return [by_layer[k] for k in sorted(by_layer)]


def layer_summary(layers: list[LayerStat]) -> dict[str, Measurement]:
    from doctor.metrics.layerwise import summary

    n = sum(1 for s in layers if s.rel_error is not None)
    return {key: Measurement(value=value, n=n) for key, value in summary(layers).items()}


def accuracy_drops(tasks: dict[str, Measurement], baseline: dict[str, Measurement]) -> dict[str, Measurement]:
    drops = {}
    for key, m in tasks.items():
        if key.startswith("acc:") and key in baseline:
            drops["acc_drop:" + key[4:]] = Measurement(value=baseline[key].value - m.value, n=m.n)
    return drops


def size_metrics(session: Session, backend, realized: dict) -> dict[str, Measurement]:
    from doctor.metrics.deployment import measure_size

    params = count_params(session.patient.model)
    out = {
        "size_mb": measure_size(backend, session.patient, realized),
        "params": Measurement(value=float(params)),
        "params_ratio": Measurement(value=params / session.patient.facts.params),
    }
    if realized.get("effective_bits") is not None:
        out["effective_bits"] = Measurement(value=float(realized["effective_bits"]))
    if realized.get("sparsity") is not None:
        out["sparsity"] = Measurement(value=float(realized["sparsity"]))
    if realized.get("coverage") is not None:  # target weights touched over target weights (see coverage.py)
        out["coverage"] = Measurement(value=float(realized["coverage"]), n=int(realized.get("target_weights", 0)))
    return out


def judge(checkup: Checkup, metrics: dict[str, Measurement]) -> list[ThresholdVerdict]:
    verdicts = []
    for key, threshold in checkup.expect.items():
        value = metrics[key].value if key in metrics else None
        passed = value is not None and math.isfinite(value) and threshold.passes(value)
        verdicts.append(ThresholdVerdict(key=key, min=threshold.min, max=threshold.max, value=value, passed=passed))
    return verdicts
