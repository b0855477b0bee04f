"""Rule files: malformed ones give located one-line errors; overrides, failures-as-findings, fuzzing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from diagnose_builders import exam, quant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.diagnose import diagnose, load_rules, parse_rule
from doctor.errors import ConfigError

GOOD = """\
id: big-loss
title: Big loss
when:
  all:
    - value: {metric: ppl_ratio}
      op: ">"
      to: 1.5
finding:
  cause: big-loss
  severity: high
  explanation: "{{ checkup }} lost x{{ ppl_ratio | fmt }}"
"""

# (description, replacement applied to GOOD, expected line, key path, message fragment)
MISTAKES = [
    ("unknown operator", ('op: ">"', 'op: "=>"'), 6, "when.all.0.op", "Input should be"),
    ("mistyped operand key", ("{metric: ppl_ratio}", "{metrik: ppl_ratio}"), 5, "when.all.0.value", "did you mean 'metric'"),
    ("unknown key in operand", ("{metric: ppl_ratio}", "{metric: ppl_ratio, colour: red}"), 5, "when.all.0.value.colour", "unknown key"),
    ("bad severity", ("severity: high", "severity: severe"), 10, "finding.severity", "'critical'"),
    ("undefined template name", ("ppl_ratio | fmt", "ppl_rato | fmt"), 11, "finding.explanation", "template names 'ppl_rato', which this rule does not produce (did you mean 'ppl_ratio'?)"),
    ("template syntax", ("{{ checkup }}", "{{ checkup }"), 11, "finding.explanation", "template"),
    ("missing key", ("title: Big loss\n", ""), 1, "title", "missing key"),
    ("condition without kind", ("  all:\n", "  alll:\n"), 4, "when", "did you mean 'all'"),
    ("operator needs list", ('to: 1.5', 'to: 1.5\n      factor: x'), 8, "when.all.0.factor", "valid number"),
    ("bad regex", ('op: ">"\n      to: 1.5', 'op: matches\n      to: "(unclosed"'), 5, "when.all.0", "regular expression"),
    ("operand needs a checkup", [("title: Big loss\n", "title: Big loss\nfor_each: exam\n"), ("{{ checkup }} ", "")], 6, "when.all.0.value", "for_each 'checkup'"),
    ("bad id", ("id: big-loss", "id: Big Loss!"), 1, "id", "should match pattern"),
]


@pytest.mark.parametrize("name, change, line, path, fragment", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_gives_one_located_line(name, change, line, path, fragment):
    text = GOOD
    for old, new in change if isinstance(change, list) else [change]:
        text = text.replace(old, new)
    assert text != GOOD
    with pytest.raises(ConfigError) as info:
        parse_rule(text, "rules/big-loss.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    rule_id = "Big Loss!" if name == "bad id" else "big-loss"
    assert message.startswith(f"rules/big-loss.yaml:{line}: rule {rule_id}: {path}: "), message
    assert fragment in message


def test_good_rule_parses():
    assert parse_rule(GOOD, "x.yaml").id == "big-loss"


def test_invalid_yaml_and_non_mapping_are_one_line():
    for text in ("id: [unclosed\n", "- a\n- b\n", "", "a: &a [*a]\n"):
        with pytest.raises(ConfigError) as info:
            parse_rule(text, "r.yaml")
        assert "\n" not in str(info.value) and str(info.value).startswith("r.yaml")


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_rule_overrides_builtin_by_id(tmp_path):
    override = GOOD.replace("id: big-loss", "id: low-bit-cliff")
    write(tmp_path, "mine.yaml", override)
    loaded = {item.rule.id: item for item in load_rules([tmp_path])}
    assert loaded["low-bit-cliff"].source == str(tmp_path / "mine.yaml")
    assert not loaded["low-bit-cliff"].builtin
    assert len([i for i in loaded.values() if i.rule.id == "low-bit-cliff"]) == 1


def test_disabled_override_switches_a_builtin_off(tmp_path):
    write(tmp_path, "off.yaml", GOOD.replace("id: big-loss", "id: numeric-failure\nenabled: false"))
    bad = quant("rtn-w2", 2, 1.0, status="error", verdict="error", error="NaN in logits")
    findings, files = diagnose(exam([bad]), [tmp_path])
    assert all(f.rule != "numeric-failure" for f in findings)
    assert str(tmp_path / "off.yaml") in files


def test_duplicate_user_ids_and_all_errors_reported(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    write(tmp_path, "c.yaml", GOOD.replace('op: ">"', 'op: "=>"'))
    with pytest.raises(ConfigError) as info:
        load_rules([tmp_path], builtin=False)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any("b.yaml:1: rule big-loss: id: also defined in" in line for line in lines)
    assert any("c.yaml:6:" in line for line in lines)


def test_missing_rule_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such rule directory"):
        load_rules([tmp_path / "nope"])


def test_rule_that_raises_becomes_a_rule_error_finding_and_others_run(tmp_path):
    # renders fine on sample values, fails on the real (missing) one: round() of None
    broken = GOOD.replace("id: big-loss", "id: broken").replace("ppl_ratio | fmt", "ppl_ratio | round(2)")
    broken = broken.replace('op: ">"\n      to: 1.5', "op: missing")
    write(tmp_path, "broken.yaml", broken)
    write(tmp_path, "good.yaml", GOOD)
    e = exam([quant("rtn-w2", 2, 2.0), quant("gptq-w2", 2, 1.2, method="gptq", metrics={"nll_delta": 0.1})])
    e.checkups[1].metrics.pop("ppl_ratio")
    findings, files = diagnose(e, [tmp_path])
    errors = [f for f in findings if f.cause == "rule-error"]
    assert [f.rule for f in errors] == ["broken"] and errors[0].severity == "info"
    assert any(f.rule == "big-loss" and f.checkups == ["rtn-w2"] for f in findings)
    assert len(files) == len(list(Path(load_rules()[0].path).parent.glob("*.yaml"))) + 2


def test_findings_are_ordered_by_severity():
    bad = quant("rtn-w1", 2, 1.0, status="error", verdict="error", error="inf loss")
    e = exam([quant("rtn-w8", 8, 1.0), quant("rtn-w4", 4, 1.02), quant("rtn-w3", 3, 1.15), quant("rtn-w2", 2, 5.0), bad])
    findings, _ = diagnose(e)
    ranks = ["info", "low", "medium", "high", "critical"]
    severities = [ranks.index(f.severity) for f in findings]
    assert severities == sorted(severities, reverse=True) and findings[0].rule == "numeric-failure"


# ---- fuzzing: the loader never fails with anything but ConfigError -----------------------------------------

KEYS = ["id", "title", "when", "finding", "all", "any", "not", "value", "op", "to", "metric", "aggregate", "layers",
        "select", "for_each", "group_by", "cause", "severity", "explanation", "as", "order_by", "take", "factor",
        "expected", "field", "params", "kind", "min", "max", "limit", "same"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.sampled_from(
        [">", "==", "matches", "in", "exists", "ppl_ratio", "checkup", "group", "exam", "quantize", "high", "{{ x }}",
         "{{ checkup }}", "{% for %}", "(", "max_step_ratio", "top_share", "bits"]
    ), st.text(max_size=8),
)  # fmt: skip
DOCS = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)),
    max_leaves=25,
)


def _parse_or_config_error(text: str) -> None:
    try:
        parse_rule(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_fuzzed_documents_never_raise_anything_but_config_error(doc):
    _parse_or_config_error(yaml.safe_dump(doc))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzzed_edits_of_a_valid_rule_never_raise_anything_but_config_error(data):
    lines = GOOD.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = data.draw(st.one_of(st.text(max_size=20), st.sampled_from([re.sub(r":.*", ": [", lines[i]), "  - x"])))
    _parse_or_config_error("\n".join(lines))
