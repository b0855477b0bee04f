"""The rule model: what to look at (`for_each`, `select`, `group_by`), when it fires (`when`), what it says.

A rule file is YAML validated here; `check_rule` adds the checks Pydantic cannot express (which operands a
scope allows, unambiguous evidence names, templates that render against sample evidence), each tied to a key
path so the loader can name the line.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, meta
from pydantic import Field, model_validator

from doctor.diagnose.aggregates import layer_range
from doctor.diagnose.conditions import Condition
from doctor.diagnose.operands import Operand, is_number
from doctor.diagnose.sandbox import BudgetedSandbox
from doctor.diagnose.selectors import Selector
from doctor.input.limits import MAX_TEMPLATE_CHARS
from doctor.results import ModelFacts
from doctor.spec.checkup import Severity
from doctor.spec.modification import Spec

RULE_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class FindingSpec(Spec):
    """What a rule reports. `explanation` and `recommendation` are Jinja templates over the evidence."""

    cause: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="a short slug, e.g. low-bit-cliff")
    severity: Severity
    explanation: str = Field(min_length=1)
    recommendation: str = ""
    reference: str = Field("", description="a paper or document that explains the cause")


class Rule(Spec):
    id: str = Field(pattern=RULE_ID)
    title: str = Field(min_length=1)
    description: str = Field("", description="what the rule detects and why; shown by `doctor rules explain`")
    enabled: bool = Field(True, description="false disables a rule of the same id (e.g. a built-in one)")
    for_each: Literal["checkup", "group", "exam"] = Field(
        "checkup", description="one finding per selected checkup, per group of checkups, or per examination"
    )
    select: Selector | None = None
    group_by: list[str] = Field(default_factory=list, description="parameters (or 'modification') forming groups")
    when: Condition | None = None
    finding: FindingSpec

    @model_validator(mode="after")
    def _grouping(self) -> Rule:
        if self.for_each == "group" and not self.group_by:
            raise ValueError("for_each 'group' needs 'group_by' (e.g. [method, group_size])")
        if self.for_each != "group" and self.group_by:
            raise ValueError("'group_by' applies only to for_each 'group'")
        return self


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` significant digits; 'n/a' for a missing value; lists element-wise."""
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    if not is_number(value) or not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def pct(value: Any, digits: int = 0) -> str:
    """A fraction as a percentage: 0.7 -> '70%'."""
    return "n/a" if not is_number(value) else f"{value * 100:.{digits}f}%"


def layers(value: Any) -> str:
    """Layer indices as ranges: [3, 4, 7] -> '3-4, 7'."""
    return layer_range([int(v) for v in value]) if isinstance(value, (list, tuple)) else fmt(value)


def environment() -> BudgetedSandbox:
    env = BudgetedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.guard_builtin_filters()
    env.add_filters({"fmt": fmt, "pct": pct, "layers": layers})
    return env


ENV = environment()


def render(template: str, context: dict[str, Any]) -> str:
    """Render a rule template within the operation, time and size budget of `doctor.input.limits`."""
    return ENV.render_budgeted(template, context).strip()


def undeclared_names(template: str) -> set[str]:
    """Names a template reads from its context, found statically: every branch, not only the one taken."""
    return meta.find_undeclared_variables(ENV.parse(template)) - set(ENV.globals)


def template_context(
    rule: Rule, evidence: dict[str, Any], *, checkup: str | None, checkups: list[str], group: dict[str, Any],
    patient: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """What a template sees: the evidence by name (and as `evidence`), the checkup(s), the group, the patient."""
    context: dict[str, Any] = dict(evidence)
    context.update(evidence=evidence, checkups=checkups, group=group, patient=patient, rule=rule.id)
    if checkup is not None:
        context["checkup"] = checkup
    return context


def rule_operands(rule: Rule) -> list[tuple[tuple, Operand]]:
    return list(rule.when.operands(("when",))) if rule.when is not None else []


def sample_evidence(rule: Rule) -> dict[str, Any]:
    evidence: dict[str, Any] = {}
    for _, operand in rule_operands(rule):
        evidence.update(operand.samples())
    return evidence


def check_rule(rule: Rule) -> list[tuple[tuple, str]]:
    """Problems Pydantic cannot see, each with the key path it belongs to."""
    problems: list[tuple[tuple, str]] = []
    seen: dict[str, Operand] = {}
    for path, operand in rule_operands(rule):
        if operand.requires_checkup() and rule.for_each != "checkup":
            problems.append((path, f"this operand reads one checkup; it needs for_each 'checkup', not '{rule.for_each}'"))
        name = operand.name()
        if name in seen and seen[name] != operand:
            problems.append((path, f"evidence name '{name}' is used by a different operand; give one an 'as' name"))
        seen.setdefault(name, operand)
    sample_patient = dict.fromkeys(ModelFacts.model_fields, 1)
    context = template_context(
        rule, sample_evidence(rule), checkup="sample" if rule.for_each == "checkup" else None,
        checkups=["sample"], group=dict.fromkeys(rule.group_by, "sample"), patient=sample_patient,
    )  # fmt: skip
    for key in ("explanation", "recommendation"):
        template = getattr(rule.finding, key)
        if len(template) > MAX_TEMPLATE_CHARS:
            problems.append((("finding", key), f"template of {len(template):,} characters, over the limit of "
                             f"{MAX_TEMPLATE_CHARS:,}"))
            continue
        try:
            unknown = sorted(undeclared_names(template) - set(context))
        except TemplateError as exc:
            problems.append((("finding", key), f"template: {exc.message or type(exc).__name__}"))
            continue
        except RecursionError:  # Jinja's parser recurses once per nested bracket or operator
            problems.append((("finding", key), "template: expressions nested too deep"))
            continue
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(context), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append((("finding", key), f"template names {', '.join(repr(u) for u in unknown)}, which this "
                             f"rule does not produce{hint}; available: {', '.join(sorted(context))}"))
            continue
        try:
            render(template, context)
        except TemplateError as exc:
            problems.append((("finding", key), f"template: {exc.message or type(exc).__name__}"))
        except Exception as exc:  # a template may fail in any way on sample values; report, never crash
            problems.append((("finding", key), f"template: {type(exc).__name__}: {exc}"))
    return problems
