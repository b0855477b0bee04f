"""Property-based fuzzing of the suite, rule and task loaders with arbitrary structures, text and bytes.

The only outcomes allowed: a valid object, or a `DoctorError` whose every line names the file (the CLI prints
it and exits 2), each example within the deadline. Examples are derandomized so CI runs the same cases.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from doctor.diagnose.loading import parse_rule
from doctor.diagnose.rule import Rule
from doctor.errors import DoctorError
from doctor.spec.checkup import Suite
from doctor.spec.loading import load_model
from doctor.spec.suites import load_suite
from doctor.tasks.format import Task, load_task

FUZZ = settings(max_examples=60, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(["name", "id", "eval", "checkups", "modification", "kind", "bits", "method", "expect", "max",
                        "min", "corpus", "tasks", "metrics", "when", "value", "op", "to", "metric", "finding",
                        "severity", "explanation", "all", "any", "not", "as", "select", "for_each", "group_by"])

SUITE = {
    "name": "fuzz",
    "eval": {"corpus": "auto", "max_windows": 2},
    "checkups": [{"id": "rtn-w4", "modification": {"kind": "quantize", "method": "rtn", "bits": 4},
                  "expect": {"ppl_ratio": {"max": 1.5}}}],
}
RULE = {
    "id": "big-loss", "title": "Big loss",
    "when": {"all": [{"value": {"metric": "ppl_ratio"}, "op": ">", "to": 1.5}]},
    "finding": {"cause": "big-loss", "severity": "high", "explanation": "ratio {{ ppl_ratio | fmt }}"},
}
TEMPLATE_PIECES = st.sampled_from(["{{ ", " }}", "{% for i in range(", ") %}", "{% endfor %}", "{% if ", " %}",
                                   "{% endif %}", "ppl_ratio", "x", " * ", " ** ", "99999", "'a'", "|fmt", "|center(",
                                   "patient.layers", "loop.index", "(", ")", "[", "]", ".__class__", "%s", " % "])


def mutate(document: dict, data) -> dict:
    """Replace one value somewhere in a valid document, or add a key, with an arbitrary structure."""
    doc = copy.deepcopy(document)
    node = doc
    for _ in range(data.draw(st.integers(0, 4))):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        children = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
        if not children:
            break
        node = data.draw(st.sampled_from(children))[1]
    if isinstance(node, list):
        node[data.draw(st.integers(0, len(node) - 1))] = data.draw(VALUES)
    else:
        node[data.draw(KEYS | st.sampled_from(list(node) or ["x"]))] = data.draw(VALUES)
    return doc


def outcome_is_valid_or_one_located_line_each(call, source: str, expected_type: type) -> None:
    try:
        result = call()
    except DoctorError as exc:
        lines = str(exc).splitlines()
        assert lines, "an empty error"
        assert all(line.startswith(source) for line in lines), lines
        return
    assert isinstance(result, expected_type)


def as_text(document) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@FUZZ
@given(st.data())
def test_suite_loader_on_mutated_suites(data):
    text = as_text(mutate(SUITE, data))
    outcome_is_valid_or_one_located_line_each(lambda: load_model(Path("fuzz.yaml"), Suite, text), "fuzz.yaml", Suite)


@FUZZ
@given(VALUES)
def test_suite_loader_on_arbitrary_structures(document):
    text = as_text(document)
    outcome_is_valid_or_one_located_line_each(lambda: load_model(Path("fuzz.yaml"), Suite, text), "fuzz.yaml", Suite)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_suite_file_of_arbitrary_bytes(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(raw)
        outcome_is_valid_or_one_located_line_each(lambda: load_suite(str(path))[0], str(path), Suite)


@FUZZ
@given(st.data())
def test_rule_loader_on_mutated_rules(data):
    text = as_text(mutate(RULE, data))
    outcome_is_valid_or_one_located_line_each(lambda: parse_rule(text, "fuzz.yaml"), "fuzz.yaml", Rule)


@FUZZ
@given(st.lists(TEMPLATE_PIECES, max_size=12).map("".join))
def test_rule_templates_are_checked_within_the_budget(template):
    document = copy.deepcopy(RULE)
    document["finding"]["explanation"] = template or "x"
    text = as_text(document)
    outcome_is_valid_or_one_located_line_each(lambda: parse_rule(text, "fuzz.yaml"), "fuzz.yaml", Rule)


@FUZZ
@given(st.text(max_size=400) | VALUES.map(as_text))
def test_rule_loader_on_arbitrary_text(text):
    outcome_is_valid_or_one_located_line_each(lambda: parse_rule(text, "fuzz.yaml"), "fuzz.yaml", Rule)


ITEMS = st.fixed_dictionaries(
    {"type": st.sampled_from(["multiple_choice", "generation", "open"])},
    optional={"context": SCALARS, "choices": VALUES, "gold": SCALARS, "prompt": SCALARS, "answer": SCALARS,
              "regex": st.sampled_from(["(a+)+$", "(?=x)", "(", r"(\d+)", "x{1000}{1000}"]) | SCALARS,
              "id": SCALARS, "meta": VALUES},
)
HEADERS = st.fixed_dictionaries({"format": st.just("model-doctor-task")},
                                optional={"name": SCALARS, "type": SCALARS, "max_new_tokens": SCALARS})


@FUZZ
@given(st.lists(ITEMS | HEADERS | VALUES, max_size=5), st.booleans())
def test_task_loader_on_arbitrary_lines(lines, header_first):
    text = "\n".join(json.dumps(line) for line in lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_text(text)
        outcome_is_valid_or_one_located_line_each(lambda: load_task(str(path)), str(path), Task)


@FUZZ
@given(st.binary(max_size=400))
def test_task_file_of_arbitrary_bytes(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        path.write_bytes(raw)
        outcome_is_valid_or_one_located_line_each(lambda: load_task(str(path)), str(path), Task)
