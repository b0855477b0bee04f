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


THRESHOLD_SOURCE = "suite thresholds"
# What `doctor rules explain` would say for the two findings the runner itself makes.
BUILTIN_RULE_DOCS = {
    "expect": "A checkup's `expect` block in the suite sets limits on its metrics (e.g. ppl_ratio <= 1.10). "
              "A checkup that misses one becomes a finding at the checkup's own severity; the release gate "
              "fails when that severity is at or above --fail-on.",
    "checkup-error": "The checkup could not be measured (an exception, NaN/inf logits, out of memory). It is "
                     "recorded with its error and always fails the release gate: nothing judged it.",
}


def advice(mod: dict) -> str:
    """What to try instead, specific to the modification that missed its thresholds."""
    kind = mod.get("kind")
    if kind == "compose":
        return " Then: ".join(advice(step) for step in mod.get("steps", []) if isinstance(step, dict))
    if kind == "quantize":
        bits, method = mod.get("bits"), mod.get("method", "rtn")
        calibrated = "a smaller group size" if method in ("gptq", "awq") else "GPTQ or AWQ with a group size of 128 or less"
        return f"Keep {method} above {bits} bits, or reach {bits} bits with {calibrated}, and re-examine."
    if kind == "prune":
        if mod.get("structure") == "nm":
            return (f"{mod.get('n')}:{mod.get('m')} sparsity costs too much with {mod.get('method', 'magnitude')}: "
                    "try Wanda or SparseGPT at the same pattern, or unstructured sparsity below 50%.")
        sparsity = mod.get("sparsity")
        amount = f"{100 * sparsity:g}%" if isinstance(sparsity, (int, float)) else str(sparsity)
        return (f"Prune less than {amount} with {mod.get('method', 'magnitude')}, or use an "
                "activation-aware method (Wanda, SparseGPT) at this sparsity, and re-examine.")
    if kind == "remove_layers":
        return "Remove fewer layers, or fine-tune (heal) the model after removing them, and re-examine."
    if kind == "expand_layers":
        return "Initialise inserted blocks as identities, or fine-tune after inserting them."
    if kind == "decode":
        return "Revisit the decoding parameters (temperature, top-k/top-p, beams) against this task."
    if kind == "onnx":
        return "Keep the sensitive MatMuls in float (exclude them from quantization) or use a larger block size."
    return "Use a milder setting or another method for this checkup, or revisit the threshold."


def kl_coverage_findings(exam: Examination) -> list[Finding]:
    """A warning on every checkup whose KL rests on less baseline probability mass than the target."""
    health = exam.baseline.health
    target = health.get("kl_target_mass")
    if target is None:
        return []
    findings = []
    for c in exam.checkups:
        coverage = c.metrics.get("kl_coverage")
        if c.status != "ok" or coverage is None or coverage.value >= target:
            continue
        low = c.metrics.get("kl_coverage_min")
        findings.append(Finding(
            rule="kl-lower-bound", title=f"KL of {c.id} rests on {coverage.value:.1%} of the baseline mass",
            severity="low", cause="kl-coverage-below-target",
            explanation=(f"{c.id}: the baseline kept {coverage.value:.2%} of its probability mass per token on average"
                         f" (lowest {low.value if low else float('nan'):.2%}), below the target {target:g}, within"
                         f" {health.get('kl_bytes_per_token')} bytes per token; every KL statistic is a lower bound."),
            recommendation="Use eval.kl_mode: hidden (exact; its head copy pays on long texts) or exact, or raise "
                           "eval.kl_bytes_per_token.",
            checkups=[c.id], evidence={"kl_coverage": coverage.value, "kl_target_mass": target}, source="runner",
        ))
    return findings


def threshold_findings(exam: Examination) -> list[Finding]:
    """One finding per checkup that missed its `expect` thresholds or could not be measured."""
    findings = []
    for c in exam.checkups:
        if c.status == "error":
            findings.append(Finding(
                rule="checkup-error", title=f"Checkup {c.id} could not be measured", severity="high",
                cause="checkup-failed", explanation=f"{c.id} failed: {c.error}",
                recommendation="Read the error; a NaN/inf result means the modification broke the model numerically.",
                checkups=[c.id], evidence={"error": c.error}, source=THRESHOLD_SOURCE,
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
            recommendation=advice(c.modification),
            checkups=[c.id], evidence={t.key: t.value for t in failed}, source=THRESHOLD_SOURCE,
        ))
    return findings


def verdict(exam: Examination) -> tuple[str, int]:
    gate = severity_rank(exam.fail_on)
    if any(c.status == "error" for c in exam.checkups):
        return "failed", EXIT_FINDINGS
    if any(severity_rank(f.severity) >= gate for f in exam.findings):
        return "findings", EXIT_FINDINGS
    return "healthy", EXIT_OK
