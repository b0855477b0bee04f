"""The examination: baseline once, then each checkup (apply -> measure -> restore), then expectation,
diagnosis and verdict. Results are journaled as they come, so an interrupted run resumes."""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from doctor.architectures.vocab import check_token_ids
from doctor.data.calibration import CalibrationProvider
from doctor.data.texts import eval_windows, resolve_corpus, text_info, tokenize
from doctor.examination.checkup import DEFAULT_TASKS, Session, now_iso, one_line, run_checkup, window_progress
from doctor.examination.environment import describe
from doctor.examination.journal import Journal
from doctor.examination.verdict import BUILTIN_RULE_DOCS, kl_coverage_findings, threshold_findings, verdict
from doctor.metrics.evaluation import baseline_pass, kl_plan
from doctor.metrics.language import perplexity
from doctor.patient import Patient
from doctor.placement.offload import state_items
from doctor.results import Baseline, CheckupResult, Examination, Finding
from doctor.spec.checkup import Suite, severity_rank

log = logging.getLogger(__name__)
LITERATURE_SEQ_LEN = 2048  # GPTQ/Wanda/SparseGPT evaluate WikiText-2 in windows of 2048 (fewer if the model's context is)


@dataclass
class Options:
    out_dir: Path
    backend: str = "torch"
    device: str = "cpu"
    resume: bool = False
    fail_on: str = "high"
    rule_dirs: list[Path] = field(default_factory=list)
    suite_path: str | None = None
    suite_sha256: str | None = None
    use_predictor: bool = True
    predictor_dir: Path | None = None  # a fitted predictors folder (default: the shipped one)
    dtype: str = "float32"  # "auto": bf16 when fast and within a stated bound of float32 on the first window
    rules: list | None = None  # rules loaded (and validated) before the model, to avoid reading them twice
    command: str | None = None  # the command line, for the report's sign-off
    memory: dict[str, str] = field(default_factory=dict)  # the memory estimate and placement, for the report


def state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in state_items(model, by_name=True):  # offloaded tensors read from their storage, one at a time
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _backend_factory(patient: Patient, options: Options):
    if options.backend == "torch":
        from doctor.backends.torch_backend import TorchBackend

        return lambda: TorchBackend(patient.model)
    from doctor.backends.factory import make_backend

    return lambda: make_backend(options.backend, patient, options.out_dir, options.device)


def _layer_probe(patient: Patient, suite: Suite, windows: torch.Tensor):
    """The layer probe, when a checkup asks for layer metrics: it rides on the baseline's evaluation pass."""
    if not any({"layer_error", "attention"} & set(c.metrics) for c in suite.checkups):
        return None
    from doctor.compress.adapters import decoder_layers
    from doctor.metrics.layerwise import LayerProbe

    return LayerProbe(list(decoder_layers(patient.model)), windows, batch_size=suite.eval.batch_size,
                      model=patient.model)


def _baseline_entropy(probe, patient: Patient, suite: Suite) -> float | None:
    """Baseline attention entropy, only when a checkup asks for `attention`: a pass of its own (eager
    attention) over the probed windows. Returns its seconds."""
    if probe is None or not any("attention" in c.metrics for c in suite.checkups):
        return None
    start = time.perf_counter()
    probe.entropy = probe.entropies(patient.model)
    return time.perf_counter() - start


def _baseline_tasks(patient: Patient, suite: Suite, backend) -> dict:
    refs = sorted({t for c in suite.checkups if "tasks" in c.metrics for t in (c.tasks or DEFAULT_TASKS)})
    if not refs:
        return {}
    from doctor.tasks import measure_tasks

    return measure_tasks(patient, backend, refs, None)


def prepare(patient: Patient, suite: Suite, options: Options, progress) -> tuple[Session, Baseline]:
    """Evaluation windows, the baseline pass (once) and what the checkups share."""
    spec = suite.eval
    context = patient.facts.context or 2048
    seq_len = min(spec.seq_len or LITERATURE_SEQ_LEN, context)
    text = resolve_corpus(spec.corpus, demo=patient.is_demo, purpose="eval")
    cap = spec.window_cap(seq_len)
    windows = eval_windows(tokenize(text, patient.tokenizer, seq_len * cap if cap else None), seq_len, cap)
    check_token_ids(windows, patient.model, patient.tokenizer, f"evaluation text {text.name}")
    info = text_info(text, windows, spec.seed)
    precision = None
    if options.dtype == "auto" and options.backend == "torch":
        from doctor.precision import choose_dtype

        progress("dtype auto: first window in float32 and bfloat16")
        precision = choose_dtype(patient, windows[:1], options.device)
    elif options.dtype == "auto":
        precision = {"requested": "auto", "chosen": "float32", "reason": f"the {options.backend} backend runs float32"}
    make_backend = _backend_factory(patient, options)
    start = time.perf_counter()
    progress(f"baseline: {info.windows} windows of {seq_len} tokens from {info.corpus}")
    # the reference framework measures the baseline whatever the backend: an ONNX checkup's KL is export parity
    from doctor.backends.torch_backend import TorchBackend

    backend = TorchBackend(patient.model)
    if options.backend == "onnx":  # fail before the baseline, not once per checkup
        from doctor.onnx.backend import require_onnxruntime

        require_onnxruntime()
    probe = _layer_probe(patient, suite, windows)
    with probe.recording() if probe is not None else nullcontext():
        base_pass, cache = baseline_pass(
            backend, windows, patient.facts.vocab, batch_size=spec.batch_size, spill_dir=options.out_dir,
            plan=kl_plan(patient.facts.vocab, spec.kl_mode, spec.kl_target_mass, spec.kl_bytes_per_token,
                         spec.kl_top_k, model=patient.model, tokens=windows.shape[0] * (windows.shape[1] - 1),
                         hidden_dtype=spec.kl_hidden_dtype),
            progress=window_progress(progress, "baseline:", info.windows),
        )
    probe_s = probe.timer.seconds if probe is not None else 0.0
    pass_s = time.perf_counter() - start - probe_s  # one evaluation pass with the KL store: the unit of cost
    metrics = perplexity(base_pass, spec.bootstrap, spec.seed)
    session = Session(
        patient=patient, eval_spec=spec, windows=windows, text=info, base_pass=base_pass, cache=cache,
        calibration=CalibrationProvider(patient, suite.calibration, seq_len), make_backend=make_backend,
        out_dir=options.out_dir, progress=progress,
    )
    session.pass_s, session.probe = pass_s, probe
    entropy_s = _baseline_entropy(probe, patient, suite)
    session.baseline_tasks = _baseline_tasks(patient, suite, backend)
    metrics.update(session.baseline_tasks)
    baseline = Baseline(
        metrics=metrics, text=info, layers=session.probe.baseline_stats() if session.probe else [],
        duration_s=round(time.perf_counter() - start, 3),
    )
    baseline.precision = precision
    baseline.health.update(cache.describe(patient.facts.vocab))
    if probe is not None:  # the probe's work inside the pass (hooks), priced in evaluation passes
        baseline.health["layer_probe_passes"] = round(probe_s / max(pass_s, 1e-9), 3)
    if entropy_s is not None:  # the opt-in eager-attention pass for attention entropy
        baseline.health["attention_probe_passes"] = round(entropy_s / max(pass_s, 1e-9), 3)
    baseline.health["backend"] = f"{backend.name}/{backend.provider}"  # the reference every checkup is held to
    baseline.health["checkup_backend"] = options.backend
    baseline.health.update(options.memory)
    return session, baseline


def examine(patient: Patient, suite: Suite, options: Options, progress=lambda message: None,
            advance=lambda: None, executor=None) -> Examination:
    """`executor`: None runs the checkups here, in suite order; `doctor.examination.ray_executor.RayExecutor`
    runs them on a Ray cluster (the same journal, the results in suite order)."""
    started, t0 = now_iso(), time.perf_counter()
    if patient.facts.weights_sha256 is None:
        patient.facts.weights_sha256 = state_sha256(patient.model)
    session, baseline = prepare(patient, suite, options, progress)
    fingerprint = {
        "weights_sha256": patient.facts.weights_sha256,
        "suite_sha256": hashlib.sha256(suite.model_dump_json().encode()).hexdigest(),
        "eval_ids_sha256": session.text.ids_sha256,
        "backend": options.backend,
    }
    journal = Journal(options.out_dir, fingerprint, options.resume)
    run_all = executor.run if executor is not None else run_here
    results = run_all(session, suite, journal, progress, advance)
    exam = Examination(
        patient=patient.facts, suite=suite.model_dump(mode="json"), suite_path=options.suite_path,
        suite_sha256=options.suite_sha256,
        environment=describe(options.device, options.backend, {"eval": suite.eval.seed,
                                                               "calibration": suite.calibration.seed},
                             command=options.command),
        started=started, baseline=baseline, checkups=results, fail_on=options.fail_on,
    )
    progress("expectation and diagnosis")
    annotate(exam, options)
    exam.ended = now_iso()
    exam.duration_s = round(time.perf_counter() - t0, 3)
    exam.verdict, exam.exit_code = verdict(exam)
    return exam


def run_here(session: Session, suite: Suite, journal: Journal, progress, advance) -> list[CheckupResult]:
    """Every checkup in this process, in suite order, on the driver's own model."""
    results = []
    for checkup in suite.checkups:
        modification = checkup.modification.model_dump(mode="json")
        result = journal.reusable(checkup.id, modification)
        if result is None:
            result = run_checkup(session, checkup)
            journal.append(result)
        else:
            progress(f"{checkup.id}: reused from {journal.path.name}")
        results.append(result)
        advance()
    return results


def annotate(exam: Examination, options: Options) -> None:
    """Predictor expectations, then findings: thresholds, then rules. A failing stage is recorded, not fatal."""
    if options.use_predictor:
        try:
            from doctor.predict import annotate as predict

            predict(exam, options.predictor_dir)
        except Exception as exc:
            log.warning("predictor unavailable: %s", one_line(exc))
            exam.predictor = {"error": one_line(exc)}
    findings: list[Finding] = threshold_findings(exam) + kl_coverage_findings(exam)
    from doctor.diagnose import diagnose, load_rules

    rules = options.rules if options.rules is not None else load_rules(options.rule_dirs)
    rule_findings, exam.rule_files = diagnose(exam, options.rule_dirs, rules=rules)
    findings += rule_findings
    fired = {f.rule for f in findings}
    docs = {r.rule.id: " ".join(r.rule.description.split()) for r in rules if r.rule.id in fired}
    exam.rule_docs = dict(sorted({**{k: v for k, v in BUILTIN_RULE_DOCS.items() if k in fired}, **docs}.items()))
    exam.findings = sorted(findings, key=lambda f: -severity_rank(f.severity))
