"""Display rows precomputed from an Examination, so the templates format nothing and compute nothing.

Findings are sorted by severity (most severe first), as deepchecks orders its results by priority.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.metrics import registry as metrics_registry
from doctor.modifications import registry
from doctor.modifications.kinds.compose import leaves
from doctor.predict.annotate import METRIC as PREDICTED_METRIC
from doctor.report import format as fmt
from doctor.report.evidence import EvidenceRow, evidence_rows
from doctor.report.gate import Gate, SummaryRow, checkup_verdict, gate, summary_row
from doctor.results import CheckupResult, Examination, Finding, Measurement, TextInfo
from doctor.spec.checkup import severity_rank

# The order of metric rows in a checkup's detail table (the registry's order); other keys follow alphabetically.
METRIC_ORDER = metrics_registry.report_order()

Pairs = list[tuple[str, str]]


@dataclass(frozen=True)
class MetricCell:
    key: str
    label: str
    value: str
    interval: str
    note: str  # sample size and what the number was measured over
    expected: str
    expected_note: str
    residual: str
    threshold: str
    verdict: str  # "pass", "fail" or "" when no threshold applies
    outside: str  # "above", "below", "inside" or ""


@dataclass(frozen=True)
class CheckupRow:
    anchor: str
    id: str
    description: str
    modification: str
    severity: str
    status: str
    verdict: str
    error: str
    metrics: list[MetricCell]
    realized: Pairs
    text: str
    calibration: str
    backend: str
    started: str
    duration: str
    failed_thresholds: str


@dataclass(frozen=True)
class FindingRow:
    rule: str
    title: str
    severity: str
    cause: str
    explanation: str
    recommendation: str
    reference: str
    checkups: str
    evidence: list[EvidenceRow]
    source: str
    documented: bool  # the rule's explanation is in the report (results carry it)


@dataclass(frozen=True)
class ThresholdMiss:
    """A checkup that missed its `expect` limits: shown as one row of one table, not one card each."""

    anchor: str
    checkup: str
    severity: str
    metric: str
    value: str
    threshold: str
    recommendation: str


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    caption: str
    svg: str
    file: str
    section: str = "plots"  # "localisation" puts a plot in its own section (layers x modules error)


@dataclass
class ReportView:
    title: str
    model: str
    gate: Gate
    summary: list[SummaryRow]
    misses: list[ThresholdMiss]
    rule_docs: Pairs
    signoff: Pairs
    facts: Pairs
    baseline: Pairs
    baseline_metrics: list[MetricCell]
    health: Pairs
    findings: list[FindingRow]
    checkups: list[CheckupRow]
    texts: Pairs
    metadata: Pairs
    rule_files: Pairs
    predictor: Pairs
    seeds: Pairs
    libraries: Pairs
    timings: list[tuple[str, str, str, str, str]]  # id, started, ended, duration, status
    plots: list[Plot] = field(default_factory=list)


def build_view(exam: Examination, plots: list[Plot] | None = None) -> ReportView:
    return ReportView(
        title=f"model-doctor examination: {exam.patient.id}",
        model=exam.patient.id,
        gate=gate(exam),
        summary=[summary_row(exam, c, i) for i, c in enumerate(exam.checkups, start=1)],
        misses=threshold_misses(exam),
        rule_docs=sorted(exam.rule_docs.items()),
        signoff=signoff_rows(exam),
        facts=facts_rows(exam),
        baseline=baseline_rows(exam),
        baseline_metrics=[_cell(k, m, None, None) for k, m in _ordered(exam.baseline.metrics)],
        health=[(str(k), fmt.value_text(v)) for k, v in sorted(exam.baseline.health.items())],
        findings=[finding_row(f, exam.rule_docs) for f in sorted_findings(exam.findings) if f.rule != "expect"],
        checkups=[checkup_row(c, i) for i, c in enumerate(exam.checkups, start=1)],
        texts=text_rows(exam),
        metadata=metadata_rows(exam),
        rule_files=sorted(exam.rule_files.items()),
        predictor=[(str(k), fmt.value_text(v)) for k, v in sorted(exam.predictor.items())],
        seeds=[(k, str(v)) for k, v in sorted(exam.environment.seeds.items())],
        libraries=sorted(exam.environment.libraries.items()),
        timings=[(c.id, c.started or "–", fmt.end_time(c.started, c.duration_s), fmt.duration(c.duration_s), c.status)
                 for c in exam.checkups],
        plots=plots or [],
    )


def sorted_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first; ties keep the engine's order (stable sort)."""
    return sorted(findings, key=lambda f: -severity_rank(f.severity))


def threshold_misses(exam: Examination) -> list[ThresholdMiss]:
    """Every missed threshold, most severe checkup first; the recommendation comes from the finding."""
    advice = {f.checkups[0]: f.recommendation for f in exam.findings if f.rule == "expect" and f.checkups}
    rows = []
    for i, c in enumerate(exam.checkups, start=1):
        for t in c.thresholds:
            if not t.passed:
                rows.append(ThresholdMiss(
                    anchor=f"c-{i}", checkup=c.id, severity=c.severity, metric=fmt.metric_label(t.key),
                    value="missing" if t.value is None else fmt.compact(t.value, t.key),
                    threshold=fmt.bound(t.min, t.max), recommendation=advice.get(c.id, "")))
    return sorted(rows, key=lambda r: -severity_rank(r.severity))


def signoff_rows(exam: Examination) -> Pairs:
    """What a reviewer signs: the exact command, tool and source, model and every input's hash."""
    env = exam.environment
    predictor = exam.predictor.get("sha256") or exam.predictor.get("error") or "–"
    return [
        ("command", env.command or "–"),
        ("tool", f"model-doctor {env.tool_version}" + (f" (git {env.git_commit})" if env.git_commit else "")),
        ("model", exam.patient.id + (f" (revision {exam.patient.revision})" if exam.patient.revision else "")),
        ("weights SHA-256", exam.patient.weights_sha256 or "–"),
        ("suite SHA-256", exam.suite_sha256 or "–"),
        ("rule files", f"{len(exam.rule_files)} (SHA-256 of each in the audit section)"),
        ("predictor SHA-256", str(predictor)),
        ("evaluation text SHA-256", exam.baseline.text.sha256 or "–"),
        ("verdict", f"{gate(exam).headline} (exit code {exam.exit_code})"),
    ]


def facts_rows(exam: Examination) -> Pairs:
    p = exam.patient
    rows = [
        ("model", p.id),
        ("architecture", f"{p.architecture} ({p.model_type})"),
        ("parameters", fmt.number(p.params)),
        ("layers", str(p.layers)),
        ("hidden size", str(p.hidden)),
        ("MLP width", fmt.number(p.intermediate)),
        ("attention heads / KV heads", f"{p.heads} / {p.kv_heads}"),
        ("vocabulary", fmt.number(p.vocab)),
        ("context", fmt.number(p.context)),
        ("dtype", p.dtype),
        ("tied embeddings", fmt.number(p.tied_embeddings)),
    ]
    if p.family:
        rows.append(("family", p.family))
    if p.training_tokens is not None:
        rows.append(("training tokens", fmt.number(p.training_tokens)))
    rows += source_rows(p)
    rows.append(("weights SHA-256", p.weights_sha256 or "–"))
    return rows


def source_rows(p) -> Pairs:
    """Where the weights came from: a GGUF baseline is a dequantized checkpoint, and the report says so."""
    src = p.source_file
    if p.source_format != "gguf" or not src:
        return []
    types = ", ".join(f"{kind} {share:.1%}" for kind, share in src.get("type_share", {}).items())
    return [
        ("source format", f"GGUF ({src.get('architecture')}), {fmt.number(src.get('file_size'))} bytes; "
                          f"the baseline is its dequantized checkpoint ({src.get('dequantized', 'float32')})"),
        ("GGUF name", src.get("name") or "–"),
        ("GGUF tensor types (share of weights)", types or "–"),
    ]


def describe_text(text: TextInfo | None) -> str:
    if text is None:
        return "–"
    return (f"{text.corpus}: {text.tokens:,} tokens in {text.windows} windows of {text.seq_len}, "
            f"seed {text.seed}")


def baseline_rows(exam: Examination) -> Pairs:
    b = exam.baseline
    ppl = b.metrics.get("ppl")
    rows = [("perplexity", fmt.number(ppl.value, "ppl") if ppl else "–")]
    if ppl is not None and ppl.lower is not None:
        rows.append(("perplexity interval", fmt.interval(ppl.lower, ppl.upper, "ppl") + _note(ppl)))
    rows += [
        ("text", b.text.corpus),
        ("tokens", fmt.number(b.text.tokens)),
        ("windows", f"{b.text.windows} × {b.text.seq_len} tokens"),
        ("seed", str(b.text.seed)),
        ("protocol", "non-overlapping windows of the joined text, tokenized once; PPL = exp(mean token NLL); "
                     "bootstrap interval over windows"),
        ("text SHA-256", b.text.sha256 or "–"),
        ("duration", fmt.duration(b.duration_s)),
    ]
    if b.precision:
        rows.append(("dtype (--dtype auto)", precision_text(b.precision)))
    return rows


def precision_text(p: dict) -> str:
    text = f"{p.get('chosen')}: {p.get('reason')}"
    if p.get("fp32_ppl") is not None:
        text += (f" (first window of {p.get('window_tokens')} tokens: float32 PPL {p['fp32_ppl']:.4g}, bfloat16 "
                 f"{p['bf16_ppl']:.4g}, change {p['relative_change']:+.3%}, bound ±{p['bound']:.0%})")
    return text


def _note(m: Measurement) -> str:
    parts = [f"n={m.n}" if m.n is not None else "", m.note or ""]
    extra = ", ".join(p for p in parts if p)
    return f" ({extra})" if extra else ""


def _ordered(metrics: dict[str, Measurement]) -> list[tuple[str, Measurement]]:
    rank = {k: i for i, k in enumerate(METRIC_ORDER)}
    return sorted(metrics.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _cell(key: str, m: Measurement, c: CheckupResult | None, threshold_text: tuple[str, str] | None) -> MetricCell:
    expected = c.expected.get(key) if c is not None else None
    exp_text = exp_note = residual = outside = ""
    if expected is not None:
        exp_text = f"{fmt.number(expected.point, key)} {fmt.interval(expected.lower, expected.upper, key)}"
        if expected.residual is not None:
            residual = fmt.signed(expected.residual, key)
            if expected.z is not None:
                residual += f" (z {expected.z:+.2f})"
        outside = expected.outside or ""
        notes = [] if expected.in_domain else ["outside the predictor's domain"]
        exp_note = "; ".join(notes + ([expected.warning] if expected.warning else []))
    elif c is not None and key == PREDICTED_METRIC:
        why = registry.no_expectation([str(leaf.get("kind")) for leaf in leaves(c.modification)])
        exp_text, exp_note = ("no expectation", why) if why else ("", "")
    bound, verdict = threshold_text or ("", "")
    note = ", ".join(p for p in (f"n={m.n}" if m.n is not None else "", m.note or "") if p)
    return MetricCell(key=key, label=fmt.metric_label(key), value=fmt.number(m.value, key),
                      interval=fmt.interval(m.lower, m.upper, key), note=note, expected=exp_text,
                      expected_note=exp_note, residual=residual, threshold=bound, verdict=verdict, outside=outside)


def checkup_row(c: CheckupResult, index: int) -> CheckupRow:
    thresholds = {t.key: (fmt.bound(t.min, t.max, t.key), "pass" if t.passed else "fail") for t in c.thresholds}
    cells = [_cell(k, m, c, thresholds.get(k)) for k, m in _ordered(c.metrics)]
    # A threshold on a metric that was never measured still deserves a row.
    for t in c.thresholds:
        if t.key not in c.metrics:
            missing = Measurement(value=t.value if t.value is not None else float("nan"))
            cells.append(_cell(t.key, missing, c, thresholds[t.key]))
    skip = {"sparsity_per_layer"}
    return CheckupRow(
        id=c.id, description=c.description, modification=fmt.modification_summary(c.modification),
        anchor=f"c-{index}", severity=c.severity, status=c.status, verdict=checkup_verdict(c), error=c.error or "",
        metrics=cells,
        realized=[(str(k), fmt.value_text(v)) for k, v in sorted(c.realized.items()) if k not in skip],
        text=describe_text(c.text), calibration=describe_text(c.calibration) if c.calibration else "",
        backend=c.backend + (f" ({c.provider})" if c.provider else ""), started=c.started or "–",
        duration=fmt.duration(c.duration_s),
        failed_thresholds=", ".join(t.key for t in c.thresholds if not t.passed),
    )


def finding_row(f: Finding, docs: dict[str, str]) -> FindingRow:
    return FindingRow(
        rule=f.rule, title=f.title, severity=f.severity, cause=f.cause, explanation=f.explanation,
        recommendation=f.recommendation, reference=f.reference, checkups=", ".join(f.checkups),
        evidence=evidence_rows(f.evidence), source=f.source, documented=f.rule in docs,
    )


def text_rows(exam: Examination) -> Pairs:
    """Every distinct evaluation and calibration text, with the checkups that used it."""
    seen: dict[str, list[str]] = {describe_text(exam.baseline.text): ["baseline"]}
    for c in exam.checkups:
        for info in (c.text, c.calibration):
            if info is not None:
                seen.setdefault(describe_text(info), []).append(c.id)
    return [(text, ", ".join(users)) for text, users in seen.items()]


def metadata_rows(exam: Examination) -> Pairs:
    env = exam.environment
    return [
        ("tool version", f"model-doctor {env.tool_version}"),
        ("results schema", str(exam.schema_version)),
        ("model", exam.patient.id),
        ("weights SHA-256", exam.patient.weights_sha256 or "–"),
        ("suite", f"{exam.suite.get('name', '–')} ({exam.suite_path or 'built in'})"),
        ("suite SHA-256", exam.suite_sha256 or "–"),
        ("device", env.device),
        ("backend", env.backend),
        ("python", env.python),
        ("platform", env.platform),
        ("started", exam.started),
        ("ended", exam.ended or "–"),
        ("duration", fmt.duration(exam.duration_s)),
    ]
