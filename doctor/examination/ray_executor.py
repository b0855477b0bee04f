"""Checkups as Ray tasks (`doctor examine MODEL --executor ray`).

The driver loads the patient and measures the baseline once, as always. What the checkups read of it (the
evaluation windows, the baseline pass, the KL store, the baseline's task scores) goes once into Ray's object
store; each checkup is then one Ray task that loads the model itself with the driver's own loader arguments,
checks that it holds the same weights, and calls the same `run_checkup`. Results come back as they finish and
go into the same `results.jsonl` journal, so `--resume` works as with the in-process executor.

A worker lost to the system (killed, out of memory, its node gone) costs only its checkup: Ray runs the task
once more, and a second loss is recorded as a failed checkup. A checkup's own exception is already a result.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.errors import DoctorError
from doctor.examination.checkup import Session, now_iso, one_line, run_checkup
from doctor.examination.journal import Journal
from doctor.results import CheckupResult, Measurement, TextInfo
from doctor.spec.checkup import Checkup, EvalSpec, Suite
from doctor.spec.modification import CalibrationSpec

log = logging.getLogger(__name__)
INSTALL_HINT = 'pip install "model-doctor[ray]"'
RETRIES = 1  # a task whose worker dies runs once more; the second loss is the checkup's recorded failure


def require_ray():
    """The `ray` module, or the one-line error that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise DoctorError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass
class Shared:
    """What every checkup reads of the driver's baseline: one object in Ray's object store."""

    eval_spec: EvalSpec
    windows: Any  # torch.Tensor (windows, seq_len)
    text: TextInfo
    base_pass: Any  # doctor.metrics.evaluation.PassResult
    cache: Any  # doctor.metrics.evaluation.BaselineCache
    calibration: CalibrationSpec
    calibration_seq_len: int
    pass_s: float
    weights_sha256: str | None  # the worker must hold these weights, or its numbers are not this model's
    dtype: str  # the driver's parameter dtype after the baseline (`--dtype auto` may have chosen bfloat16)
    backend: str
    device: str
    out_dir: Path
    threads: int = 1  # torch threads per task: its CPU share (BLAS results depend on the thread count)
    baseline_tasks: dict[str, Measurement] = field(default_factory=dict)

    @classmethod
    def of(cls, session: Session, backend: str, device: str, cpus: float) -> Shared:
        import torch

        patient = session.patient
        return cls(
            eval_spec=session.eval_spec, windows=session.windows.cpu(), text=session.text,
            base_pass=session.base_pass, cache=session.cache, calibration=session.calibration.default,
            calibration_seq_len=session.calibration.default_seq_len, pass_s=session.pass_s,
            weights_sha256=patient.facts.weights_sha256,
            dtype=str(next(patient.model.parameters(), torch.empty(0)).dtype).removeprefix("torch."),
            backend=backend, device=device, out_dir=Path(session.out_dir).resolve(), threads=max(1, int(cpus)),
            baseline_tasks=dict(session.baseline_tasks),
        )


def failed(checkup: Checkup, text: TextInfo, error: str) -> CheckupResult:
    """A checkup that produced nothing, recorded as run_checkup records its own failures."""
    return CheckupResult(
        id=checkup.id, description=checkup.description, modification=checkup.modification.model_dump(mode="json"),
        severity=checkup.severity, tags=list(checkup.tags), text=text, started=now_iso(), status="error",
        verdict="error", error=error,
    )


class RayExecutor:
    """Runs the checkups a journal does not hold yet as Ray tasks, each asking for `gpus` GPUs and `cpus` CPUs."""

    name = "ray"

    def __init__(self, load, *, backend: str, device: str, address: str | None = None, gpus: float | None = None,
                 cpus: float = 1.0) -> None:
        self.load = load  # () -> Patient: the driver's loader with its arguments (a picklable partial)
        self.backend, self.device, self.address = backend, device, address
        self.gpus = (1.0 if device == "cuda" else 0.0) if gpus is None else gpus
        self.cpus = cpus
        if self.gpus < 0 or self.cpus < 0:
            raise DoctorError("--checkup-gpus and --checkup-cpus must not be negative")
        if device == "cuda" and self.gpus == 0:
            raise DoctorError("--checkup-gpus 0 with --device cuda: the checkups would not run on the baseline's "
                              "device; ask for a GPU share (e.g. --checkup-gpus 1 or 0.5)")
        if device != "cuda" and self.gpus > 0:
            raise DoctorError(f"--checkup-gpus {self.gpus:g} with --device {device}: checkups run on the "
                              "baseline's device; measure the baseline on the GPU with --device cuda")
        require_ray()

    def run(self, session: Session, suite: Suite, journal: Journal, progress, advance) -> list[CheckupResult]:
        done: dict[str, CheckupResult] = {}
        for checkup in suite.checkups:
            result = journal.reusable(checkup.id, checkup.modification.model_dump(mode="json"))
            if result is not None:
                progress(f"{checkup.id}: reused from {journal.path.name}")
                advance()
                done[checkup.id] = result
        todo = [c for c in suite.checkups if c.id not in done]
        if todo:
            ray = require_ray()
            with self._runtime(ray):
                shared = self._share(ray, Shared.of(session, self.backend, self.device, self.cpus))
                for result in self._sweep(ray, shared, todo, session.text, progress):
                    journal.append(result)
                    done[result.id] = result
                    advance()
        return [done[c.id] for c in suite.checkups]

    @contextlib.contextmanager
    def _runtime(self, ray):
        """A runtime already started in this process is used as it is; one started here is shut down after."""
        if ray.is_initialized():
            yield
            return
        where = self.address or "a local Ray runtime (or the cluster in RAY_ADDRESS)"
        # worker logs stay in Ray's session logs, off the progress bar; Ray Client (ray://) takes no such options
        quiet = {} if (self.address or "").startswith("ray://") else {"logging_level": logging.ERROR,
                                                                     "log_to_driver": False}
        try:
            ray.init(address=self.address, **quiet)
        except Exception as exc:  # connection refused, a bad address, a version mismatch: one line each
            raise DoctorError(f"--address {self.address}: cannot start or reach {where}: {one_line(exc)}") from None
        try:
            self._check_resources(ray)
            yield
        finally:
            ray.shutdown()

    def _check_resources(self, ray) -> None:
        """A task no node can hold would wait forever: refuse it now, naming what the cluster has."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(r.get("GPU", 0) >= self.gpus and r.get("CPU", 0) >= self.cpus for r in nodes):
            return
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no live nodes"
        raise DoctorError(f"--checkup-gpus {self.gpus:g} --checkup-cpus {self.cpus:g}: no Ray node has that much "
                          f"(nodes: {have}); start workers that do, or ask for less")

    def _share(self, ray, shared: Shared):
        try:
            return ray.put(shared)
        except (TypeError, pickle.PicklingError) as exc:
            raise DoctorError(f"the baseline (KL mode {shared.cache.mode}) cannot be shared with Ray workers: "
                              f"{one_line(exc)}") from None

    def _sweep(self, ray, shared, todo: list[Checkup], text: TextInfo, progress):
        """Submit every checkup, then yield results as they finish (a lost worker's checkup as a failure)."""
        resources = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.gpus:  # a fresh worker per GPU task: its GPU memory goes back with it (and its GPU id is its own)
            resources["max_calls"] = 1
        task = ray.remote(max_retries=RETRIES, retry_exceptions=False, **resources)(checkup_task)
        running = {task.options(name=f"checkup:{c.id}").remote(self.load, shared, c): c for c in todo}
        progress(f"{len(running)} checkups on Ray")
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                checkup = running.pop(ready[0])
                yield self._collect(ray, ready[0], checkup, text)
                progress(f"{checkup.id} done; {len(running)} running on Ray")
        finally:
            for ref in running:  # interrupted: nothing keeps computing for a driver that is gone
                ray.cancel(ref, force=True)

    @staticmethod
    def _collect(ray, ref, checkup: Checkup, text: TextInfo) -> CheckupResult:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # raised outside run_checkup's own net (e.g. unpickling)
            return failed(checkup, text, f"error on the Ray worker: {one_line(exc.cause or exc)}")
        except _lost(ray) as exc:  # the worker process or its node died, on both attempts
            return failed(checkup, text, f"worker lost twice: {one_line(exc)}")
        except ray.exceptions.RayError as exc:  # Ray could not run it at all (its runtime environment, say)
            return failed(checkup, text, f"Ray could not run the checkup: {one_line(exc)}")


def _lost(ray) -> tuple[type, ...]:
    """Ray's errors for a task whose worker went away (retried by Ray before they reach the driver)."""
    names = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError", "LocalRayletDiedError")
    return tuple(getattr(ray.exceptions, name) for name in names if hasattr(ray.exceptions, name))


_LOADED: dict[str, Any] = {}  # this worker process's patient: restored bit for bit after every checkup


def checkup_task(load, shared: Shared, checkup: Checkup) -> CheckupResult:
    """One checkup on a Ray worker: the model loaded (or kept from this worker's previous checkup), the
    session rebuilt around the shared baseline, then the same run_checkup as in-process."""
    import torch

    torch.set_num_threads(shared.threads)
    try:
        session = worker_session(load, shared, checkup)
    except Exception as exc:  # the model or the session could not be set up here: this checkup's failure
        log.debug("checkup %s: worker setup failed", checkup.id, exc_info=True)
        return failed(checkup, shared.text, f"the Ray worker could not set up the checkup: {one_line(exc)}")
    return run_checkup(session, checkup)


def worker_patient(load, shared: Shared):
    """The driver's model, loaded by the driver's loader on this worker and checked to be the same weights."""
    key = repr((load, shared.weights_sha256, shared.dtype, shared.windows.shape))
    if _LOADED.get("key") == key:
        return _LOADED["patient"]
    _LOADED.clear()  # one model per worker process
    import torch

    from doctor.examination.runner import state_sha256

    patient = load()
    if patient.facts.weights_sha256 is None:
        patient.facts.weights_sha256 = state_sha256(patient.model)
    if patient.facts.weights_sha256 != shared.weights_sha256:
        raise DoctorError(f"the worker loaded other weights than the driver (sha256 {patient.facts.weights_sha256} "
                          f"!= {shared.weights_sha256}); every node must see the same model files")
    dtype = getattr(torch, shared.dtype)
    if next(patient.model.parameters()).dtype != dtype:  # the driver switched after loading (`--dtype auto`)
        patient.model = patient.model.to(dtype)
        patient.facts.dtype = shared.dtype
    _LOADED.update(key=key, patient=patient)
    return patient


def worker_session(load, shared: Shared, checkup: Checkup) -> Session:
    from doctor.data.calibration import CalibrationProvider
    from doctor.examination.runner import Options, _backend_factory, _baseline_entropy, _layer_probe

    patient = worker_patient(load, shared)
    shared.out_dir.mkdir(parents=True, exist_ok=True)  # ONNX exports land here (this node's disk, unless shared)
    options = Options(out_dir=shared.out_dir, backend=shared.backend, device=shared.device)
    session = Session(
        patient=patient, eval_spec=shared.eval_spec, windows=shared.windows, text=shared.text,
        base_pass=shared.base_pass, cache=shared.cache,
        calibration=CalibrationProvider(patient, shared.calibration, shared.calibration_seq_len),
        make_backend=_backend_factory(patient, options), out_dir=shared.out_dir,
    )
    session.pass_s = shared.pass_s
    session.baseline_tasks = dict(shared.baseline_tasks)
    # the layer probe holds the baseline's own block objects: a worker records it on its own model, once, with
    # the same hooks over the same batches as the driver's baseline pass (and attention entropy when asked)
    one = Suite.model_construct(eval=shared.eval_spec, checkups=[checkup])
    if _LOADED.get("probe") is None and (probe := _layer_probe(patient, one, shared.windows)) is not None:
        with probe.recording():
            probe.run(patient.model)
        _LOADED["probe"] = probe
    if not _LOADED.get("entropy") and _baseline_entropy(_LOADED.get("probe"), patient, one) is not None:
        _LOADED["entropy"] = True
    session.probe = _LOADED.get("probe")
    return session
