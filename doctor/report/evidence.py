"""A finding's evidence as a table for people: labelled rows with meanings, no repeated or internal keys.

Rule operands record what they read under a name plus locating facts under `<name>_<field>`. Two operands that
read the same observation (say, one for `outside` and one for `in_domain` of the same expectation) therefore
write the same facts twice; the copy is dropped here. The record itself keeps everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from doctor.report import format as fmt


@dataclass(frozen=True)
class EvidenceRow:
    label: str
    value: str
    meaning: str


# Fields an operand writes beside its value: label and meaning; the order is the display order.
FIELDS: dict[str, tuple[str, str]] = {
    "metric": ("metric", "what was compared"),
    "observed": ("observed", "the measured value"),
    "point": ("expected", "the predictor's point estimate"),
    "interval": ("expected interval", "the predictor's prediction interval"),
    "outside": ("observed vs. interval", "where the observation falls against the predicted interval"),
    "residual": ("residual", "log(observed / expected), in nats"),
    "z": ("z-score", "the residual in predictive standard deviations"),
    "in_domain": ("model in the predictor's domain", "'no': the expectation is an extrapolation"),
    "checkup": ("checkup", "the checkup the value comes from"),
    "before": ("step from", "the milder setting of the step"),
    "at": ("step to", "the harsher setting of the step"),
    "value_before": ("value before the step", ""),
    "value_at": ("value after the step", ""),
    "step": ("rise over the step", "value after minus value before"),
    "rate": ("rise per unit", "rise over the step per unit of the setting (e.g. per bit)"),
    "previous_rate": ("rise per unit, step before", "the same for the preceding, milder step"),
    "values": ("values", "the observation for each checkup of the group"),
    "checkups": ("checkups", "the checkups the value was computed over"),
    "layers": ("layers", ""),
    "layer": ("layer", ""),
}
IN_METRIC_UNITS = frozenset({"observed", "point", "value_before", "value_at", "step", "values"})
# Names rules give their values (`as:`), where the name alone does not say what the number is.
NAMES: dict[str, tuple[str, str]] = {
    "cliff": ("steepness (×)", "this step's rise per unit over the rise per unit of the step before"),
    "cliff_rise": ("rise over the step", "value after minus value before"),
    "safe": ("compression level", "1 − bits/16 for quantization, the sparsity for pruning, the removed fraction "
                                  "for layer removal; higher is more compressed"),
    "expected": ("observed vs. interval", "where the observation falls against the predicted interval"),
    "in_domain": ("model in the predictor's domain", "'no': the expectation is an extrapolation"),
    "init": ("initialisation", "how inserted blocks were initialised"),
}


def _groups(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> {field: value} ('' is the operand's own value); a key joins the longest name it extends."""
    names = {k for k in evidence if any(o.startswith(k + "_") for o in evidence)}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in evidence.items():
        owner = max((n for n in names if key.startswith(n + "_")), key=len, default=None)
        if key in names or owner is None:
            groups.setdefault(key, {})[""] = value
        else:
            groups.setdefault(owner, {})[key[len(owner) + 1:]] = value
    return groups


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _redundant(fields: dict[str, Any], kept: list[dict[str, Any]]) -> bool:
    """A group whose every fact, its own value included, already appears in a group shown before it."""
    for other in kept:
        values = list(other.values())
        own = [v for k, v in fields.items() if k]
        if all(k in other and _same(other[k], v) for k, v in fields.items() if k) and own and \
                any(_same(fields.get(""), v) for v in values + own):
            return True
    return False


def _value(value: Any, metric: str = "") -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v, metric)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v, metric) for v in value)
    if isinstance(value, float) and metric:
        return fmt.number(value, metric)
    return fmt.value_text(value)


def _label(name: str) -> tuple[str, str]:
    if name in NAMES:
        return NAMES[name]
    if fmt.is_metric(name):
        return fmt.metric_label(name), "the measured value"
    return name.replace("_", " "), ""


def _group_rows(name: str, fields: dict[str, Any], prefix: str) -> list[EvidenceRow]:
    metric = str(fields.get("metric") or "")
    own = fields.get("")
    rows = []
    if own is not None and not any(_same(own, v) for k, v in fields.items() if k):
        label, meaning = _label(name)
        rows.append(EvidenceRow(prefix + label, _value(own, name), meaning))
    shown = {k: v for k, v in fields.items() if k and v is not None}
    if "lower" in shown and "upper" in shown:
        level = shown.pop("level", None)
        shown["interval"] = fmt.interval(shown.pop("lower"), shown.pop("upper"), metric)
        if isinstance(level, float):
            shown["interval"] += f" at {fmt.percent(level)}"
    for key in [k for k in FIELDS if k in shown] + sorted(k for k in shown if k not in FIELDS):
        label, meaning = FIELDS.get(key, (key.replace("_", " "), ""))
        value = shown[key]
        unit = metric if key in IN_METRIC_UNITS else ""
        text = fmt.metric_label(value) if key == "metric" else value if key == "interval" else _value(value, unit)
        rows.append(EvidenceRow(prefix + label, text, meaning))
    return rows


def evidence_rows(evidence: dict[str, Any]) -> list[EvidenceRow]:
    kept: list[dict[str, Any]] = []
    shown: list[tuple[str, dict[str, Any]]] = []
    for name, fields in _groups(evidence).items():
        if _redundant(fields, kept):
            continue
        kept.append(fields)
        shown.append((name, fields))
    several = sum(1 for _, fields in shown if fields.keys() - {""}) > 1
    rows: list[EvidenceRow] = []
    for name, fields in shown:
        prefix = f"{_label(name)[0]}: " if several and fields.keys() - {""} else ""
        rows += _group_rows(name, fields, prefix)
    return rows
