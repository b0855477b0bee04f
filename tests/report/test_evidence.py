"""Evidence for people: labelled rows, no repeated operand facts, no internal keys."""

from __future__ import annotations

from doctor.report.evidence import evidence_rows
from doctor.verdict import advice

EXPECTED = {"point": 2.315, "lower": 1.233, "upper": 26.7, "residual": 2.649, "z": 1.718, "outside": "above",
            "level": 0.9, "in_domain": False, "metric": "ppl_ratio", "observed": 32.73}
CLIFF = {"checkups": ["a", "b", "c"], "values": {"a": 1.09, "b": 1.74, "c": 84.8}, "at": 2.0, "before": 3.0,
         "step": 83.07, "rate": 83.07, "previous_rate": 0.644, "checkup": "c", "value_at": 84.8,
         "value_before": 1.74, "metric": "ppl_ratio"}


def _operands(**groups: tuple[object, dict]) -> dict:
    evidence = {}
    for name, (value, fields) in groups.items():
        evidence[name] = value
        evidence.update({f"{name}_{k}": v for k, v in fields.items()})
    return evidence


def test_two_operands_on_one_expectation_show_it_once() -> None:
    rows = evidence_rows(_operands(expected=("above", EXPECTED), in_domain=(False, EXPECTED)))
    labels = [r.label for r in rows]
    assert len(labels) == len(set(labels)) == 8
    assert labels.count("model in the predictor's domain") == 1
    assert next(r for r in rows if r.label == "expected interval").value == "[1.2330, 26.7000] at 90.0%"


def test_a_second_operand_on_the_same_step_is_dropped() -> None:
    rows = evidence_rows(_operands(cliff=(128.9, CLIFF), cliff_rise=(83.07, CLIFF)))
    assert [r.label for r in rows].count("rise over the step") == 1
    assert rows[0].label == "steepness (×)" and rows[0].meaning
    assert not any("cliff" in r.label for r in rows)


def test_every_row_is_labelled_and_empty_values_are_left_out() -> None:
    rows = evidence_rows({"safe": 0.75, "safe_checkup": "rtn-w4", "safe_metric": None, "ppl_ratio": 1.35})
    assert {r.label for r in rows} == {"compression level", "checkup", "ppl ratio"}
    assert "bits/16" in rows[0].meaning
    assert all("_" not in r.label for r in rows)


def test_threshold_advice_names_the_modification() -> None:
    assert "2 bits" in advice({"kind": "quantize", "method": "rtn", "bits": 2, "group_size": 32})
    assert "2:4" in advice({"kind": "prune", "method": "magnitude", "structure": "nm", "n": 2, "m": 4})
    assert "50%" in advice({"kind": "prune", "method": "magnitude", "structure": "unstructured", "sparsity": 0.5})
