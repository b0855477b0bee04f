"""Running rules over an examination: scopes, conditions, findings ordered by severity.

A rule that raises becomes a finding of its own (cause 'rule-error', severity info) and the other rules still
run: a broken rule must not hide the diagnosis of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doctor.diagnose.loading import LoadedRule, load_rules
from doctor.diagnose.operands import Scope
from doctor.diagnose.rule import Rule, render, template_context
from doctor.diagnose.selectors import group_key, select
from doctor.results import Examination, Finding
from doctor.spec.checkup import severity_rank

log = logging.getLogger(__name__)

def diagnose(
    exam: Examination, rule_dirs: list[Path] | None = None, *, rules: list[LoadedRule] | None = None
) -> tuple[list[Finding], dict[str, str]]:
    """Findings for `exam`, most severe first, and the rule files used with their SHA-256.

    `rules` (from `load_rules`, e.g. validated before the examination started) skips loading again.
    """
    loaded = rules if rules is not None else load_rules(rule_dirs)
    findings: list[Finding] = []
    for item in loaded:
        if not item.rule.enabled:
            continue
        try:
            findings.extend(evaluate_rule(item.rule, exam, source=item.source))
        except Exception as exc:  # failures are results: one broken rule must not stop the others
            log.warning("rule %s failed: %s: %s", item.rule.id, type(exc).__name__, exc)
            findings.append(rule_error(item.rule, exc, item.source))
    return sort_findings(findings), {item.source: item.sha256 for item in loaded}


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings, key=lambda f: (-severity_rank(f.severity), f.rule, f.checkups[:1] or [""])
    )


def rule_error(rule: Rule, exc: Exception, source: str = "") -> Finding:
    return Finding(
        rule=rule.id,
        title=rule.title,
        severity="info",
        cause="rule-error",
        explanation=f"rule {rule.id} could not be evaluated: {type(exc).__name__}: {exc}",
        recommendation="fix the rule file; the other rules ran normally",
        source=source,
    )


def scopes(rule: Rule, exam: Examination) -> Iterator[Scope]:
    """One scope per finding the rule may produce."""
    selected = select(exam.checkups, rule.select)
    if rule.for_each == "checkup":
        for checkup in selected:
            yield Scope(exam, checkup, members=exam.checkups)
    elif rule.for_each == "group":
        groups: dict[str, tuple[dict[str, Any], list]] = {}
        for checkup in selected:
            key = group_key(checkup, rule.group_by)
            groups.setdefault(repr(sorted(key.items(), key=lambda kv: kv[0])), (key, []))[1].append(checkup)
        for key, members in groups.values():
            yield Scope(exam, None, members=members, group=key)
    else:
        yield Scope(exam, None, members=selected)


def evaluate_rule(rule: Rule, exam: Examination, source: str = "") -> list[Finding]:
    findings = []
    for scope in scopes(rule, exam):
        if rule.when is None or rule.when.evaluate(scope):
            findings.append(_finding(rule, scope, exam, source))
    return findings


def _involved(scope: Scope) -> list[str]:
    """The checkups a finding is about: the subject, the group, or those its evidence names."""
    if scope.checkup is not None:
        return [scope.checkup.id]
    if scope.group:
        return [c.id for c in scope.members]
    known = {c.id for c in scope.exam.checkups}
    named: list[str] = []
    for key, value in scope.evidence.items():
        ids = [value] if key.endswith("_checkup") else value if key.endswith("_checkups") else []
        named += [i for i in ids if isinstance(i, str) and i in known and i not in named]
    return named or [c.id for c in scope.members]


def _finding(rule: Rule, scope: Scope, exam: Examination, source: str) -> Finding:
    checkups = _involved(scope)
    context = template_context(
        rule, scope.evidence, checkup=scope.checkup.id if scope.checkup else None, checkups=checkups,
        group=scope.group, patient=exam.patient.model_dump(),
    )  # fmt: skip
    spec = rule.finding
    return Finding(
        rule=rule.id,
        title=rule.title,
        severity=spec.severity,
        cause=spec.cause,
        explanation=render(spec.explanation, context),
        recommendation=render(spec.recommendation, context) if spec.recommendation else "",
        reference=spec.reference,
        checkups=checkups,
        evidence=dict(scope.evidence),
        source=source,
    )
