"""Compare two examinations (e.g. two release candidates) and say what changed beyond the measurement noise.

A metric counts as changed when its intervals do not overlap (or one value falls outside the other's interval
when only one side has an interval); a metric with no interval on either side counts as changed when it moves by
more than `rtol` relatively. Verdict changes, new or removed findings and new or removed checkups always count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from doctor.report import format as fmt
from doctor.report.format import modification_summary
from doctor.results import Examination, Finding, Measurement
from doctor.spec.checkup import severity_rank

DEFAULT_RTOL = 0.01
BASELINE = "(baseline)"


@dataclass(frozen=True)
class MetricChange:
    checkup: str
    metric: str
    a: Measurement
    b: Measurement
    overlap: bool | None  # None: no interval on either side
    beyond: bool

    def row(self) -> list[str]:
        a, b, key = self.a, self.b, self.metric
        overlap = "–" if self.overlap is None else "yes" if self.overlap else "no"
        return [self.checkup, fmt.metric_label(key), f"{fmt.number(a.value, key)} {fmt.interval(a.lower, a.upper, key)}",
                f"{fmt.number(b.value, key)} {fmt.interval(b.lower, b.upper, key)}", _relative(a.value, b.value),
                overlap, "CHANGED" if self.beyond else ""]


@dataclass
class ExaminationDiff:
    a_model: str
    b_model: str
    metrics: list[MetricChange] = field(default_factory=list)
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)
    added_checkups: list[str] = field(default_factory=list)
    removed_checkups: list[str] = field(default_factory=list)
    modified_checkups: list[tuple[str, str, str]] = field(default_factory=list)
    new_findings: list[Finding] = field(default_factory=list)
    resolved_findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(any(m.beyond for m in self.metrics) or self.verdicts or self.added_checkups
                    or self.removed_checkups or self.new_findings or self.resolved_findings)


def intervals_overlap(a: Measurement, b: Measurement) -> bool | None:
    """Whether two measurements agree within their intervals; None when neither has one."""
    a_has, b_has = a.lower is not None and a.upper is not None, b.lower is not None and b.upper is not None
    if a_has and b_has:
        return a.lower <= b.upper and b.lower <= a.upper
    if a_has:
        return a.lower <= b.value <= a.upper
    if b_has:
        return b.lower <= a.value <= b.upper
    return None


def _beyond(a: Measurement, b: Measurement, overlap: bool | None, rtol: float) -> bool:
    if not (math.isfinite(a.value) and math.isfinite(b.value)):
        return not (a.value == b.value or (math.isnan(a.value) and math.isnan(b.value)))
    if overlap is not None:
        return not overlap
    return abs(a.value - b.value) > rtol * max(abs(a.value), abs(b.value))


def _relative(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
        return "–"
    return f"{100 * (b - a) / abs(a):+.2f}%"


def compare_metrics(checkup: str, a: dict[str, Measurement], b: dict[str, Measurement],
                    rtol: float) -> list[MetricChange]:
    changes = []
    for key in sorted(set(a) & set(b)):
        overlap = intervals_overlap(a[key], b[key])
        changes.append(MetricChange(checkup, key, a[key], b[key], overlap, _beyond(a[key], b[key], overlap, rtol)))
    return changes


def _finding_key(f: Finding) -> tuple[str, tuple[str, ...]]:
    return f.rule, tuple(sorted(f.checkups))


def diff_examinations(a: Examination, b: Examination, rtol: float = DEFAULT_RTOL) -> ExaminationDiff:
    """What differs from examination `a` to examination `b`, checkup by checkup (matched by id)."""
    result = ExaminationDiff(a_model=a.patient.id, b_model=b.patient.id, warnings=_warnings(a, b))
    result.metrics += compare_metrics(BASELINE, a.baseline.metrics, b.baseline.metrics, rtol)
    a_checkups, b_checkups = {c.id: c for c in a.checkups}, {c.id: c for c in b.checkups}
    result.removed_checkups = [cid for cid in a_checkups if cid not in b_checkups]
    result.added_checkups = [cid for cid in b_checkups if cid not in a_checkups]
    for cid, ca in a_checkups.items():
        cb = b_checkups.get(cid)
        if cb is None:
            continue
        if ca.modification != cb.modification:
            result.modified_checkups.append(
                (cid, modification_summary(ca.modification), modification_summary(cb.modification)))
        if ca.verdict != cb.verdict:
            result.verdicts.append((cid, ca.verdict, cb.verdict))
        result.metrics += compare_metrics(cid, ca.metrics, cb.metrics, rtol)
    a_findings, b_findings = {_finding_key(f): f for f in a.findings}, {_finding_key(f): f for f in b.findings}
    result.new_findings = [f for k, f in b_findings.items() if k not in a_findings]
    result.resolved_findings = [f for k, f in a_findings.items() if k not in b_findings]
    for findings in (result.new_findings, result.resolved_findings):
        findings.sort(key=lambda f: -severity_rank(f.severity))
    return result


def _warnings(a: Examination, b: Examination) -> list[str]:
    """Differences that make the comparison itself questionable."""
    notes = []
    if a.baseline.text.sha256 != b.baseline.text.sha256 or a.baseline.text.tokens != b.baseline.text.tokens:
        notes.append(f"evaluation texts differ ({a.baseline.text.corpus}, {a.baseline.text.tokens:,} tokens vs "
                     f"{b.baseline.text.corpus}, {b.baseline.text.tokens:,} tokens): differences may be the text's")
    if a.suite_sha256 and b.suite_sha256 and a.suite_sha256 != b.suite_sha256:
        notes.append("suite files differ (SHA-256)")
    if a.environment.backend != b.environment.backend or a.environment.device != b.environment.device:
        notes.append(f"run on {a.environment.backend}/{a.environment.device} vs "
                     f"{b.environment.backend}/{b.environment.device}")
    return notes


def render_diff(d: ExaminationDiff, all_metrics: bool = False) -> str:
    """The diff as Markdown tables: readable in a terminal and pasteable into a review."""
    lines = [f"# model-doctor diff: {fmt.md_escape(d.a_model)} → {fmt.md_escape(d.b_model)}", ""]
    lines.append("**Changed beyond the intervals.**" if d.changed else "**No change beyond the intervals.**")
    lines += [f"- warning: {fmt.md_escape(w)}" for w in d.warnings]
    for title, ids in (("Checkups only in A", d.removed_checkups), ("Checkups only in B", d.added_checkups)):
        if ids:
            lines += ["", f"## {title}", "", fmt.md_escape(", ".join(ids))]
    if d.modified_checkups:
        lines += ["", "## Checkups whose modification differs", ""]
        lines += _table(["checkup", "A", "B"], [list(row) for row in d.modified_checkups])
    if d.verdicts:
        lines += ["", "## Verdict changes", ""]
        lines += _table(["checkup", "A", "B"], [list(row) for row in d.verdicts])
    shown = [m for m in d.metrics if all_metrics or m.beyond]
    if shown:
        lines += ["", "## Metrics" if all_metrics else "## Metrics that moved beyond their intervals", ""]
        lines += _table(["checkup", "metric", "A", "B", "change", "intervals overlap", ""], [m.row() for m in shown])
    for title, findings in (("New findings", d.new_findings), ("Resolved findings", d.resolved_findings)):
        if findings:
            lines += ["", f"## {title}", ""]
            lines += _table(["severity", "rule", "finding", "checkups"],
                            [[f.severity, f.rule, f.title, ", ".join(f.checkups)] for f in findings])
    unchanged = sum(1 for m in d.metrics if not m.beyond)
    lines += ["", f"{len(d.metrics)} metrics compared, {unchanged} within their intervals."]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt.md_escape(cell) for cell in row) + " |" for row in rows]
    return out
