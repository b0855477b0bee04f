"""Compare two examinations (two release candidates, or one model before and after a change) as a reviewer would.

The gate change comes first. Then, per shared checkup, each metric's change with its significance: two values
differ significantly when their intervals do not overlap, and only when both were measured on the same text
(the intervals are window-to-window noise of one text; they say nothing about a change of text). A metric without
an interval is shown, never judged. Findings are kept apart: new, resolved, no longer measured (their checkup
is missing from B) and on checkups only B ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from doctor.report.gate import Gate, checkup_verdict, gate
from doctor.results import CheckupResult, Examination, Finding, Measurement, TextInfo
from doctor.spec.checkup import severity_rank

BASELINE = "(baseline)"
# Which way is worse, per metric; metrics not named here (bits, sparsity, params) have no better or worse.
HIGHER_IS_WORSE = frozenset({"ppl", "ppl_ratio", "nll_delta", "kl_mean", "kl_median", "kl_p99", "layer_error_max",
                             "layer_error_mean", "latency_ms", "size_mb", "repetition_rate", "generated_ppl",
                             "attention_entropy_shift"})
HIGHER_IS_BETTER = frozenset({"top1_agreement", "topk_coverage", "distinct_1", "distinct_2"})
WORSE_PREFIXES = ("acc_drop:",)
BETTER_PREFIXES = ("acc:", "acc_norm:", "exact_match:")


def direction(key: str) -> int:
    """+1 when a higher value is worse, -1 when it is better, 0 when neither."""
    if key in HIGHER_IS_WORSE or key.startswith(WORSE_PREFIXES):
        return 1
    if key in HIGHER_IS_BETTER or key.startswith(BETTER_PREFIXES):
        return -1
    return 0


@dataclass(frozen=True)
class MetricChange:
    checkup: str
    metric: str
    a: Measurement
    b: Measurement
    overlap: bool | None  # None: an interval is missing on either side
    same_text: bool

    @property
    def significant(self) -> bool:
        """Intervals on both sides, same text, no overlap (or a value turned non-finite)."""
        if not (math.isfinite(self.a.value) and math.isfinite(self.b.value)):
            return not _same_value(self.a.value, self.b.value)
        return self.same_text and self.overlap is False

    @property
    def status(self) -> str:
        """worse | better | changed | within noise | no interval | texts differ."""
        if self.significant:
            sign = direction(self.metric) * _sign(self.b.value - self.a.value)
            return "worse" if sign > 0 else "better" if sign < 0 else "changed"
        if not self.same_text:
            return "texts differ"
        return "no interval" if self.overlap is None else "within noise"


def _sign(x: float) -> int:
    if math.isnan(x):
        return 1  # a value that turned NaN got worse
    return (x > 0) - (x < 0)


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@dataclass
class ExaminationDiff:
    a_model: str
    b_model: str
    a_gate: Gate
    b_gate: Gate
    a_exit: int
    b_exit: int
    texts_differ: list[str] = field(default_factory=list)  # what differs between the two evaluation texts
    warnings: list[str] = field(default_factory=list)
    metrics: list[MetricChange] = field(default_factory=list)
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)
    shared_checkups: list[str] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    modified_checkups: list[tuple[str, str, str]] = field(default_factory=list)
    new_findings: list[Finding] = field(default_factory=list)
    resolved_findings: list[Finding] = field(default_factory=list)
    unmeasured_findings: list[Finding] = field(default_factory=list)  # in A, on checkups B did not run
    coverage_findings: list[Finding] = field(default_factory=list)  # in B, on checkups A did not run

    @property
    def gate_changed(self) -> bool:
        return self.a_gate.state != self.b_gate.state

    @property
    def gate_to_fail(self) -> bool:
        return self.b_gate.state == "fail" and self.a_gate.state != "fail"

    @property
    def worse(self) -> list[MetricChange]:
        return [m for m in self.metrics if m.status == "worse"]

    @property
    def verdicts_worse(self) -> list[tuple[str, str, str]]:
        return [v for v in self.verdicts if v[2] in ("fail", "error") and v[1] not in ("fail", "error")]

    @property
    def exit_code(self) -> int:
        """1 only when B is significantly worse somewhere, a checkup newly fails, or the gate turned to fail."""
        return 1 if (self.gate_to_fail or self.worse or self.verdicts_worse) else 0


def intervals_overlap(a: Measurement, b: Measurement) -> bool | None:
    """Whether two measurements' intervals overlap; None unless both have one."""
    if None in (a.lower, a.upper, b.lower, b.upper):
        return None
    return a.lower <= b.upper and b.lower <= a.upper


def text_differences(a: TextInfo | None, b: TextInfo | None) -> list[str]:
    """What makes two evaluation texts different (empty when they are the same tokens)."""
    if a is None or b is None:
        return [] if a is b else ["one side has no text record"]
    found = []
    if a.corpus != b.corpus:
        found.append(f"corpus {a.corpus} vs {b.corpus}")
    if (a.tokens, a.windows, a.seq_len) != (b.tokens, b.windows, b.seq_len):
        found.append(f"{a.tokens:,} tokens in {a.windows} windows of {a.seq_len} vs "
                     f"{b.tokens:,} in {b.windows} of {b.seq_len}")
    if a.sha256 and b.sha256 and a.sha256 != b.sha256:
        found.append("text SHA-256 differs")
    if a.ids_sha256 and b.ids_sha256 and a.ids_sha256 != b.ids_sha256 and not found:
        found.append("token ids differ (another tokenizer?)")
    return found


def compare_metrics(checkup: str, a: dict[str, Measurement], b: dict[str, Measurement],
                    same_text: bool) -> list[MetricChange]:
    return [MetricChange(checkup, key, a[key], b[key], intervals_overlap(a[key], b[key]), same_text)
            for key in sorted(set(a) & set(b))]


def _matched(f: Finding, others: list[Finding]) -> bool:
    """The same rule about the same checkups; a group finding whose group grew or shrank still matches."""
    return any(o.rule == f.rule and (set(o.checkups) & set(f.checkups) or not (o.checkups or f.checkups))
               for o in others)


def _split_findings(result: ExaminationDiff, a: Examination, b: Examination) -> None:
    a_ids, b_ids = {c.id for c in a.checkups}, {c.id for c in b.checkups}
    for f in b.findings:
        if not _matched(f, a.findings):
            (result.new_findings if set(f.checkups) <= a_ids else result.coverage_findings).append(f)
    for f in a.findings:
        if not _matched(f, b.findings):
            (result.resolved_findings if set(f.checkups) <= b_ids else result.unmeasured_findings).append(f)
    for findings in (result.new_findings, result.resolved_findings, result.unmeasured_findings,
                     result.coverage_findings):
        findings.sort(key=lambda f: -severity_rank(f.severity))


def _compare_checkup(result: ExaminationDiff, ca: CheckupResult, cb: CheckupResult, same_baseline: bool) -> None:
    from doctor.report.format import modification_summary

    if ca.modification != cb.modification:
        result.modified_checkups.append(
            (ca.id, modification_summary(ca.modification), modification_summary(cb.modification)))
    va, vb = checkup_verdict(ca), checkup_verdict(cb)
    if va != vb:
        result.verdicts.append((ca.id, va, vb))
    same = same_baseline if ca.text is None and cb.text is None else not text_differences(ca.text, cb.text)
    result.metrics += compare_metrics(ca.id, ca.metrics, cb.metrics, same)


def diff_examinations(a: Examination, b: Examination) -> ExaminationDiff:
    """What differs from examination `a` to examination `b`, checkup by checkup (matched by id)."""
    result = ExaminationDiff(a_model=a.patient.id, b_model=b.patient.id, a_gate=gate(a), b_gate=gate(b),
                             a_exit=a.exit_code, b_exit=b.exit_code,
                             texts_differ=text_differences(a.baseline.text, b.baseline.text), warnings=_warnings(a, b))
    same_baseline = not result.texts_differ
    result.metrics += compare_metrics(BASELINE, a.baseline.metrics, b.baseline.metrics, same_baseline)
    a_checkups, b_checkups = {c.id: c for c in a.checkups}, {c.id: c for c in b.checkups}
    result.only_a = [cid for cid in a_checkups if cid not in b_checkups]
    result.only_b = [cid for cid in b_checkups if cid not in a_checkups]
    result.shared_checkups = [cid for cid in a_checkups if cid in b_checkups]
    for cid in result.shared_checkups:
        _compare_checkup(result, a_checkups[cid], b_checkups[cid], same_baseline)
    _split_findings(result, a, b)
    return result


def _warnings(a: Examination, b: Examination) -> list[str]:
    """Differences that make the comparison itself questionable (the text is checked separately)."""
    notes = []
    if a.patient.weights_sha256 and a.patient.weights_sha256 == b.patient.weights_sha256 and a.patient.id != b.patient.id:
        notes.append("both runs examined the same weights under different names")
    if a.suite_sha256 and b.suite_sha256 and a.suite_sha256 != b.suite_sha256:
        notes.append("the suite files differ (SHA-256): thresholds and checkups may not match")
    if a.environment.backend != b.environment.backend or a.environment.device != b.environment.device:
        notes.append(f"run on {a.environment.backend}/{a.environment.device} vs "
                     f"{b.environment.backend}/{b.environment.device}")
    if a.fail_on != b.fail_on:
        notes.append(f"release gates differ: fail-on {a.fail_on} vs {b.fail_on}")
    return notes
