"""From results to a release verdict: threshold failures become findings; the exit code gates a release.

Exit 0: healthy (no finding at or above `--fail-on`, no failed checkup). Exit 1: findings at or above it, or a
checkup that could not be measured. Exit 2 is reserved for bad input and raised elsewhere.
"""

from __future__ import annotations

from doctor.errors import EXIT_FINDINGS, EXIT_OK
from doctor.results import Examination, Finding
from doctor.spec.checkup import severity_rank


def _bound(t) -> str:
    parts = []
    if t.min is not None:
        parts.append(f">= {t.min:g}")
    if t.max is not None:
        parts.append(f"<= {t.max:g}")
    return " and ".join(parts)


def threshold_findings(exam: Examination) -> list[Finding]:
    """One finding per checkup that missed its `expect` thresholds or could not be measured."""
    findings = []
    for c in exam.checkups:
        if c.status == "error":
            findings.append(Finding(
                rule="checkup-error", title=f"Checkup {c.id} could not be measured", severity="high",
                cause="checkup-failed", explanation=f"{c.id} failed: {c.error}",
                recommendation="Read the error; a NaN/inf result means the modification broke the model numerically.",
                checkups=[c.id], evidence={"error": c.error}, source="runner",
            ))
            continue
        failed = [t for t in c.thresholds if not t.passed]
        if not failed:
            continue
        parts = [
            f"{t.key} = {'missing' if t.value is None else f'{t.value:.4g}'} (expected {_bound(t)})" for t in failed
        ]
        findings.append(Finding(
            rule="expect", title=f"Checkup {c.id} misses its thresholds", severity=c.severity,
            cause="threshold-exceeded", explanation=f"{c.id}: " + "; ".join(parts),
            recommendation="Use a milder setting or another method for this checkup, or revisit the threshold.",
            checkups=[c.id], evidence={t.key: t.value for t in failed}, source="runner",
        ))
    return findings


def verdict(exam: Examination) -> tuple[str, int]:
    gate = severity_rank(exam.fail_on)
    if any(c.status == "error" for c in exam.checkups):
        return "failed", EXIT_FINDINGS
    if any(severity_rank(f.severity) >= gate for f in exam.findings):
        return "findings", EXIT_FINDINGS
    return "healthy", EXIT_OK
