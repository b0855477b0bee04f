"""The decision at the top of the report: the release gate in three states, why, and one row per checkup.

The gate never reads "pass" while a checkup errored or a finding (threshold misses included) sits at or above
`--fail-on`; threshold misses and findings below the gate make it "pass with warnings". A checkup without
thresholds is "measured", never "pass": nothing judged it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from doctor.metrics import registry as metrics_registry
from doctor.report import format as fmt
from doctor.results import CheckupResult, Examination, Finding, ThresholdVerdict
from doctor.spec.checkup import severity_rank

# When no threshold names a checkup's key metric: the metric registry's summary keys in its order, then what
# decoding checkups measure.
DECODING_KEYS = ("generated_ppl", "repetition_rate")
KEY_PREFIXES = ("acc_drop:", "acc:", "exact_match:")
NAMED_AT_MOST = 3
GATE_TEXT = {"pass": "Release gate: pass", "warn": "Release gate: pass with warnings", "fail": "Release gate: FAIL"}


@dataclass(frozen=True)
class Gate:
    state: str  # pass | warn | fail
    headline: str
    reason: str  # one sentence naming the worst findings
    details: list[str]


@dataclass(frozen=True)
class SummaryRow:
    """One checkup in the decision table: what was done, the number that judges it, against what."""

    anchor: str
    id: str
    modification: str
    severity: str
    metric: str
    value: str
    interval: str
    threshold: str
    expected: str
    expected_note: str
    outside: str  # above | below | inside | ""
    verdict: str  # pass | fail | error | measured
    note: str  # the error, or further missed thresholds
    findings: str  # worst severity of the findings naming this checkup, "" when none
    findings_count: int


def checkup_verdict(c: CheckupResult) -> str:
    if c.status == "error" or c.verdict == "error":
        return "error"
    if not c.thresholds:
        return "measured"
    return "pass" if all(t.passed for t in c.thresholds) else "fail"


def key_metric(c: CheckupResult) -> str | None:
    """The first missed threshold's metric, else the first threshold's, else the most telling metric measured."""
    missed = [t.key for t in c.thresholds if not t.passed]
    if missed or c.thresholds:
        return (missed or [t.key for t in c.thresholds])[0]
    for key in (*metrics_registry.summary_keys(), *DECODING_KEYS):
        if key in c.metrics:
            return key
    for prefix in KEY_PREFIXES:
        named = sorted(k for k in c.metrics if k.startswith(prefix))
        if named:
            return named[0]
    return sorted(c.metrics)[0] if c.metrics else None


def _threshold(c: CheckupResult, key: str) -> ThresholdVerdict | None:
    return next((t for t in c.thresholds if t.key == key), None)


def _findings_for(exam: Examination, cid: str) -> list[Finding]:
    return [f for f in exam.findings if cid in f.checkups]


def summary_row(exam: Examination, c: CheckupResult, index: int) -> SummaryRow:
    key = key_metric(c)
    m = c.metrics.get(key) if key else None
    t = _threshold(c, key) if key else None
    e = c.expected.get(key) if key else None
    value = fmt.compact(m.value if m else (t.value if t else None), key or "")
    if t is not None and m is None and t.value is None:
        value = "missing"
    others = [x for x in c.thresholds if not x.passed and x.key != key]
    note = c.error or ""
    coverage = c.metrics.get("coverage")
    if coverage is not None and coverage.value < 1.0:  # a number that rests on part of what was targeted says so
        note = (f"touched {fmt.percent(coverage.value)} of the targeted weights; " + note).rstrip("; ")
    if others:
        note = (note + "; " if note else "") + "also missed: " + ", ".join(f"{fmt.metric_label(x.key)} {fmt.compact(x.value, x.key)} "
                                           f"({fmt.bound(x.min, x.max)})" for x in others)
    expected = expected_note = outside = ""
    if e is not None:
        expected = f"{fmt.significant(e.point)} [{fmt.significant(e.lower)}, {fmt.significant(e.upper)}]"
        expected_note = "" if e.in_domain else "*"
        outside = e.outside or ""
    mine = _findings_for(exam, c.id)
    worst = max((f.severity for f in mine), key=severity_rank) if mine else ""
    return SummaryRow(
        anchor=f"c-{index}", id=c.id, modification=fmt.modification_summary(c.modification), severity=c.severity,
        metric=fmt.metric_label(key) if key else "–", value=value if key else "–",
        interval=fmt.compact_interval(m.lower, m.upper, key) if m is not None and key else "",
        threshold=fmt.bound(t.min, t.max) if t is not None else "–", expected=expected or "–",
        expected_note=expected_note, outside=outside, verdict=checkup_verdict(c), note=note, findings=worst,
        findings_count=len(mine),
    )


def _overshoot(t: ThresholdVerdict) -> float:
    """How far a missed threshold was missed, as a factor (for naming the worst first)."""
    if t.value is None or not math.isfinite(t.value):
        return math.inf
    if t.max is not None and t.value > t.max:
        return t.value / t.max if t.max > 0 else math.inf
    if t.min is not None and t.value < t.min:
        return t.min / t.value if t.value > 0 else math.inf
    return 1.0


def _miss_text(c: CheckupResult, t: ThresholdVerdict) -> str:
    return (f"{c.id} {fmt.metric_label(t.key)} {fmt.compact(t.value, t.key)} against {fmt.bound(t.min, t.max)}"
            f" ({c.severity})")


def _finding_text(f: Finding) -> str:
    where = f" ({', '.join(f.checkups)})" if f.checkups else ""
    return f"{f.severity} '{f.title}'{where}"


def _named(items: list[str]) -> str:
    shown = items[:NAMED_AT_MOST]
    rest = len(items) - len(shown)
    return "; ".join(shown) + (f"; and {rest} more" if rest else "")


def gate(exam: Examination) -> Gate:
    gate_rank = severity_rank(exam.fail_on)
    errors = [c.id for c in exam.checkups if checkup_verdict(c) == "error"]
    misses = sorted(((c, t) for c in exam.checkups for t in c.thresholds if not t.passed),
                    key=lambda ct: (-severity_rank(ct[0].severity), -_overshoot(ct[1]), ct[0].id))
    rules = sorted((f for f in exam.findings if f.rule not in ("expect", "checkup-error")),
                   key=lambda f: -severity_rank(f.severity))
    blocking_rules = [f for f in rules if severity_rank(f.severity) >= gate_rank]
    blocking_misses = [(c, t) for c, t in misses if severity_rank(c.severity) >= gate_rank]
    warnings = [f for f in rules if f.severity != "info"]
    if errors or blocking_rules or blocking_misses or exam.exit_code != 0:
        state = "fail"
        causes = [f"{cid} could not be measured" for cid in errors] + [_finding_text(f) for f in blocking_rules]
        causes += [_miss_text(c, t) for c, t in blocking_misses]
        reason = f"Fails the release gate (fail-on {exam.fail_on}): " + _named(causes or ["see the findings"]) + "."
    elif misses or warnings:
        state = "warn"
        named = _named([_miss_text(c, t) for c, t in misses] + [_finding_text(f) for f in warnings])
        reason = f"Passes the release gate (nothing at or above {exam.fail_on}), with warnings: {named}."
    else:
        state = "pass"
        reason = "Passes the release gate: every checkup measured, every threshold met, no finding above info."
    return Gate(state=state, headline=GATE_TEXT[state], reason=reason, details=_details(exam, errors))


def _details(exam: Examination, errors: list[str]) -> list[str]:
    verdicts = [checkup_verdict(c) for c in exam.checkups]
    counts = {v: verdicts.count(v) for v in ("pass", "fail", "error", "measured")}
    line = (f"{len(verdicts)} checkups: {counts['fail']} missed a threshold, {counts['pass']} met every threshold, "
            f"{counts['measured']} measured without a threshold, {counts['error']} could not be measured")
    by_severity: dict[str, int] = {}
    for f in exam.findings:
        by_severity[f.severity] = by_severity.get(f.severity, 0) + 1
    ordered = sorted(by_severity.items(), key=lambda item: -severity_rank(item[0]))
    findings = ", ".join(f"{n} {sev}" for sev, n in ordered) or "none"
    return [line, f"findings: {findings}; fail-on: {exam.fail_on}; exit code {exam.exit_code}"]
