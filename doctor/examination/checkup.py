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
from doctor.metrics.evaluation import BaselineCache, PassResult
from doctor.metrics.measuring import Measuring, after_restore, measure_groups, window_progress
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.patient import Patient
from doctor.placement.offload import check_offload_support
from doctor.placement.oom import free_caches, is_oom, oom_message
from doctor.results import CheckupResult, Measurement, TextInfo, ThresholdVerdict
from doctor.spec.checkup import Checkup, EvalSpec
from doctor.tasks.format import DEFAULT_TASKS

log = logging.getLogger(__name__)
__all__ = ["DEFAULT_TASKS", "Session", "now_iso", "one_line", "run_checkup", "window_progress"]


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
    measuring = None
    stage = f"applying {checkup.modification.kind}"
    try:
        session.progress(f"{checkup.id}: {stage}")
        check_offload_support(checkup.modification, session.patient.model)
        applied = apply_modification(checkup.modification, ctx)
        result.realized = jsonable(applied.realized)
        result.layers = applied.layers
        result.calibration = applied.calibration
        backend = ctx.state.get("backend") or session.make_backend()
        result.backend, result.provider = backend.name, backend.provider
        stage = "measuring"
        session.progress(f"{checkup.id}: {stage}")
        measuring = Measuring(session, checkup, backend, ctx, result)
        result.metrics = measure_groups(measuring)
    except Exception as exc:  # a failed checkup is a result, never a crash of the examination
        log.debug("checkup %s failed", checkup.id, exc_info=True)
        oom = is_oom(exc)
        error = oom_message(exc, session.patient.device, stage) if oom else one_line(exc)
        result.status, result.verdict, result.error = "error", "error", error
    finally:
        ctx.undo.restore()
    if result.status == "error":
        free_caches()  # an out-of-memory checkup leaves its tensors behind until collected
    if measuring is not None and result.status == "ok":
        result.metrics.update(after_restore(measuring))
    if result.status == "ok":
        result.thresholds = judge(checkup, result.metrics)
        result.verdict = "pass" if all(t.passed for t in result.thresholds) else "fail"
    result.duration_s = round(time.perf_counter() - start, 3)
    return result


def judge(checkup: Checkup, metrics: dict[str, Measurement]) -> list[ThresholdVerdict]:
    verdicts = []
    for key, threshold in checkup.expect.items():
        value = metrics[key].value if key in metrics else None
        passed = value is not None and math.isfinite(value) and threshold.passes(value)
        verdicts.append(ThresholdVerdict(key=key, min=threshold.min, max=threshold.max, value=value, passed=passed))
    return verdicts
