"""Every built-in rule fires on a constructed observation set made for it, and stays quiet on a near miss.

Evidence values are checked against the observations they were copied from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from diagnose_builders import checkup, exam, expected, layers, prune, quant

from doctor.diagnose import evaluate_rule, load_rules
from doctor.results import LayerStat

RULES = {item.rule.id: item.rule for item in load_rules()}


def findings(rule_id, examination):
    return evaluate_rule(RULES[rule_id], examination)


def value(examination, checkup_id, metric):
    return next(c for c in examination.checkups if c.id == checkup_id).metrics[metric].value


# ---- low-bit cliff ---------------------------------------------------------------------------------------


def bits_sweep(ratios: dict[int, float], method="rtn"):
    return [quant(f"{method}-w{b}", b, r, method=method) for b, r in ratios.items()]


def test_low_bit_cliff_fires_at_the_bit_width_of_the_jump():
    e = exam(bits_sweep({8: 1.001, 4: 1.02, 3: 1.15, 2: 5.0}) + bits_sweep({8: 1.0, 4: 1.01, 3: 1.03}, "gptq"))
    (f,) = findings("low-bit-cliff", e)
    assert f.evidence["cliff_at"] == 2 and f.evidence["cliff_before"] == 3
    assert f.evidence["cliff_value_at"] == value(e, "rtn-w2", "ppl_ratio")
    assert f.evidence["cliff_value_before"] == value(e, "rtn-w3", "ppl_ratio")
    assert f.evidence["cliff_values"] == {c: value(e, c, "ppl_ratio") for c in ("rtn-w8", "rtn-w4", "rtn-w3", "rtn-w2")}
    assert f.checkups == ["rtn-w8", "rtn-w4", "rtn-w3", "rtn-w2"]
    assert "2 bits" in f.explanation and f.severity == "high"


def test_low_bit_cliff_quiet_on_smooth_degradation():
    # geometric but small: each step grows, none by a large absolute amount
    e = exam(bits_sweep({8: 1.0, 6: 1.005, 4: 1.03, 3: 1.08}))
    assert findings("low-bit-cliff", e) == []


# ---- structured pruning collapse ---------------------------------------------------------------------------


def structured(ratios, structure="heads"):
    return [prune(f"{structure}-{int(s * 100)}", s, r, structure=structure, method="magnitude") for s, r in ratios.items()]


def test_structured_collapse_located_at_the_collapse_sparsity():
    e = exam(structured({0.1: 1.1, 0.2: 1.25, 0.3: 1.5, 0.4: 3.0, 0.5: 8.0}))
    (f,) = findings("structured-pruning-collapse", e)
    assert f.evidence["collapse_at"] == 0.4 and f.evidence["collapse_before"] == 0.3
    assert f.evidence["collapse_value_at"] == value(e, "heads-40", "ppl_ratio")
    assert "40%" in f.explanation


def test_structured_collapse_quiet_on_linear_decline():
    e = exam(structured({0.1: 1.1, 0.2: 1.2, 0.3: 1.3, 0.4: 1.4, 0.5: 1.5}))
    assert findings("structured-pruning-collapse", e) == []


# ---- unstructured sparsity limit ---------------------------------------------------------------------------


def test_sparsity_limit_reports_last_within_and_first_beyond():
    e = exam([prune(f"wanda-{s}", s / 100, r) for s, r in ((30, 1.02), (50, 1.12), (60, 1.45), (70, 3.1))])
    (f,) = findings("unstructured-sparsity-limit", e)
    assert f.evidence["within"] == 0.5 and f.evidence["within_checkup"] == "wanda-50"
    assert f.evidence["beyond"] == 0.6 and f.evidence["beyond_value"] == value(e, "wanda-60", "ppl_ratio")


def test_sparsity_limit_quiet_when_everything_is_within():
    e = exam([prune(f"wanda-{s}", s / 100, r) for s, r in ((30, 1.02), (50, 1.12))])
    assert findings("unstructured-sparsity-limit", e) == []


# ---- unexpected hemorrhage / robustness --------------------------------------------------------------------


def with_expectation(outside: str, observed: float = 0.9, in_domain: bool = False):
    c = quant("gptq-w3", 3, 2.0, method="gptq", metrics={"nll_delta": observed})
    c.expected["nll_delta"] = expected("nll_delta", 0.2, 0.1, 0.4, outside, in_domain=in_domain)
    return exam([c])


def test_unexpected_hemorrhage_fires_above_interval_with_exact_evidence():
    e = with_expectation("above", in_domain=True)
    (f,) = findings("unexpected-hemorrhage", e)
    exp = e.checkups[0].expected["nll_delta"]
    assert (f.evidence["expected_upper"], f.evidence["expected_point"]) == (exp.upper, exp.point)
    assert f.evidence["expected_observed"] == value(e, "gptq-w3", "nll_delta")
    assert f.severity == "high"
    assert findings("unexpected-hemorrhage-extrapolated", e) == []
    assert findings("unexpected-robustness", e) == []


def test_unexpected_hemorrhage_extrapolated_fires_out_of_domain_at_medium():
    e = with_expectation("above")
    (f,) = findings("unexpected-hemorrhage-extrapolated", e)
    assert f.severity == "medium"
    assert "outside the predictor's training domain" in f.explanation
    assert f.evidence["expected_observed"] == value(e, "gptq-w3", "nll_delta")
    assert findings("unexpected-hemorrhage", e) == []
    assert findings("unexpected-hemorrhage-extrapolated", with_expectation("inside", 0.3)) == []


def test_unexpected_robustness_fires_below_and_hemorrhage_quiet_inside():
    assert len(findings("unexpected-robustness", with_expectation("below", 0.01))) == 1
    inside = with_expectation("inside", 0.3)
    assert findings("unexpected-hemorrhage", inside) == [] and findings("unexpected-robustness", inside) == []


# ---- calibration mismatch ----------------------------------------------------------------------------------


def calibrated(ratio_a: float, ratio_b: float):
    return exam([
        prune("wanda-50-stories", 0.5, ratio_a, calibration="tinystories-calib"),
        prune("wanda-50-wiki", 0.5, ratio_b, calibration="wikitext2-valid"),
        prune("wanda-60-wiki", 0.6, 3.0, calibration="wikitext2-valid"),
    ])  # fmt: skip


def test_calibration_mismatch_fires_for_the_same_modification():
    e = calibrated(1.3, 1.6)
    (f,) = findings("calibration-mismatch", e)
    assert f.checkups == ["wanda-50-stories", "wanda-50-wiki"]
    assert f.evidence["divergence"] == pytest.approx(1.6 / 1.3)
    assert f.evidence["corpora_values"] == {"wanda-50-stories": "tinystories-calib", "wanda-50-wiki": "wikitext2-valid"}


def test_calibration_mismatch_quiet_when_corpora_agree():
    assert findings("calibration-mismatch", calibrated(1.30, 1.32)) == []


# ---- layer-localised hemorrhage ----------------------------------------------------------------------------


def test_layer_localised_names_the_layers_and_share():
    c = quant("rtn-w3", 3, 1.4)
    c.layers = layers([0.01, 0.01, 0.02, 0.30, 0.25, 0.02, 0.01, 0.01])
    (f,) = findings("layer-localised-hemorrhage", exam([c]))
    assert f.evidence["concentration_layers"] == [3, 4]
    assert f.evidence["concentration"] == pytest.approx(0.55 / 0.63)
    assert "layers 3-4 contribute 87%" in f.explanation


def test_layer_localised_quiet_when_error_is_spread():
    c = quant("rtn-w3", 3, 1.4)
    c.layers = layers([0.1] * 8)
    assert findings("layer-localised-hemorrhage", exam([c])) == []


# ---- outlier-sensitive quantization ------------------------------------------------------------------------


def outlier_exam(outlier: float, rtn_nll: float):
    base = [LayerStat(layer=i, extra={"outlier_ratio": r}) for i, r in enumerate([3.0, outlier, 4.0])]
    return exam([
        quant("rtn-w4", 4, 1.5, metrics={"nll_delta": rtn_nll}),
        quant("gptq-w4", 4, 1.05, method="gptq", metrics={"nll_delta": 0.05}),
        quant("awq-w4", 4, 1.04, method="awq", metrics={"nll_delta": 0.04}),
        quant("gptq-w3", 3, 1.2, method="gptq", metrics={"nll_delta": 0.01}),  # another bit width: not a peer
    ], baseline_layers=base)  # fmt: skip


def test_outlier_sensitive_fires_against_the_best_peer():
    e = outlier_exam(60.0, 0.4)
    (f,) = findings("outlier-sensitive-quantization", e)
    assert f.evidence["best_peer"] == value(e, "awq-w4", "nll_delta") and f.evidence["best_peer_checkup"] == "awq-w4"
    assert f.evidence["outliers"] == 60.0 and f.evidence["outliers_layer"] == 1
    assert f.checkups == ["rtn-w4"]


def test_outlier_sensitive_quiet_without_outliers_or_without_a_gap():
    assert findings("outlier-sensitive-quantization", outlier_exam(5.0, 0.4)) == []
    assert findings("outlier-sensitive-quantization", outlier_exam(60.0, 0.06)) == []


# ---- numeric failure ---------------------------------------------------------------------------------------


def test_numeric_failure_fires_on_nan_error():
    bad = quant("rtn-w2", 2, 1.0, status="error", verdict="error", error="NumericError: logits contain NaN")
    (f,) = findings("numeric-failure", exam([bad]))
    assert f.severity == "critical" and "NaN" in f.explanation


def test_numeric_failure_quiet_on_other_errors():
    other = quant("rtn-w2", 2, 1.0, status="error", verdict="error", error="out of memory; maintenance window")
    assert findings("numeric-failure", exam([other, quant("rtn-w4", 4, 1.01)])) == []


# ---- layer-expansion disruption ----------------------------------------------------------------------------


def expansion(ppl_ratio, top1):
    mod = {"kind": "expand_layers", "count": 2, "init": "identity", "placement": "interleave"}
    return exam([checkup("expand-2", mod, metrics={"ppl_ratio": ppl_ratio, "top1_agreement": top1})])


def test_expansion_disruption_fires_when_identity_init_changes_output():
    (f,) = findings("layer-expansion-disruption", expansion(1.3, 0.8))
    assert f.evidence["init"] == "identity" and f.evidence["top1_agreement"] == 0.8
    assert "should not change the function" in f.explanation


def test_expansion_disruption_quiet_when_function_is_kept():
    assert findings("layer-expansion-disruption", expansion(1.0, 1.0)) == []


# ---- decoding instability ----------------------------------------------------------------------------------


def decoding(accs):
    return exam([
        checkup(f"decode-{s}", {"kind": "decode", "strategy": s}, metrics={"exact_match:arith": a, "distinct_2": 0.5})
        for s, a in accs.items()
    ])  # fmt: skip


def test_decoding_instability_fires_on_spread():
    e = decoding({"greedy": 0.62, "beam": 0.58, "sample": 0.41})
    (f,) = findings("decoding-instability", e)
    assert f.evidence["accuracy_spread"] == pytest.approx(0.62 - 0.41)
    assert f.evidence["accuracy_spread_metric"] == "exact_match:arith"
    assert f.evidence["accuracy_spread_values"]["decode-sample"] == value(e, "decode-sample", "exact_match:arith")


def test_decoding_instability_quiet_when_strategies_agree():
    assert findings("decoding-instability", decoding({"greedy": 0.62, "beam": 0.60, "sample": 0.57})) == []


# ---- safe compression zone ---------------------------------------------------------------------------------


def test_safe_zone_names_the_most_compressed_passing_checkup_per_family():
    e = exam([
        quant("gptq-w8", 8, 1.0, method="gptq"), quant("gptq-w4", 4, 1.05, method="gptq"),
        quant("gptq-w3", 3, 1.4, method="gptq", verdict="fail"),
        prune("wanda-30", 0.3, 1.02), prune("wanda-50", 0.5, 1.1), prune("wanda-70", 0.7, 3.0, verdict="fail"),
    ])  # fmt: skip
    by_family = {f.evidence["safe_checkup"]: f for f in findings("safe-compression-zone", e)}
    assert set(by_family) == {"gptq-w4", "wanda-50"}
    assert by_family["wanda-50"].evidence["safe"] == 0.5


def test_safe_zone_quiet_when_nothing_passes():
    e = exam([quant("rtn-w2", 2, 9.0, verdict="fail"), quant("rtn-w3", 3, 2.0, verdict="fail")])
    assert findings("safe-compression-zone", e) == []


def test_every_builtin_rule_has_tests_here():
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [rule_id for rule_id in RULES if f'"{rule_id}"' not in source]
    assert missing == []


# ---- prior quantization (history) ------------------------------------------------------------------------


HISTORY = {"linears": 211, "on_grid": 211, "layers": "0-29", "off_grid": [], "gguf_types": {"Q4_1": 210, "Q8_0": 1},
           "levels_per_group": {"10": 3, "11": 7, "16": 2},
           "layouts": [{"bits": 4, "group_size": 32, "scheme": "float offset", "linears": 210, "params": 9,
                        "examples": []},
                       {"bits": 8, "group_size": 32, "scheme": "symmetric", "linears": 1, "params": 1, "examples": []}]}


def test_prior_quantization_names_grid_layers_and_histogram():
    e = exam([])
    e.patient = e.patient.model_copy(update={"prior_bits": 4, "prior_group_size": 32, "history": HISTORY})
    (finding,) = findings("prior-quantization", e)
    assert (finding.severity, finding.evidence["bits"], finding.evidence["group_size"]) == ("info", 4, 32)
    assert finding.evidence["history"]["levels_per_group"] == {"10": 3, "11": 7, "16": 2}
    assert "~4 bits, groups of 32 inputs" in finding.explanation and "decoder layers 0-29" in finding.explanation
    assert "210 Q4_1" in finding.explanation and "float offset" in finding.explanation


def test_prior_quantization_quiet_on_float_weights():
    e = exam([])
    e.patient = e.patient.model_copy(update={"history": {**HISTORY, "layouts": [], "on_grid": 0}})
    assert findings("prior-quantization", e) == []


def history_checkup(observed: float, outside: str, history: str = "below"):
    e = expected("ppl_ratio", 1.27, 1.05, 2.76, outside, in_domain=False)
    e = e.model_copy(update={"history": history, "fresh_point": 1.1, "fresh_lower": 1.0, "fresh_upper": 1.25})
    e2 = exam([quant("rtn-w4-g128", 4, observed, group_size=128, expected={"ppl_ratio": e})])
    e2.patient = e2.patient.model_copy(update={"prior_bits": 4, "prior_group_size": 32, "history": HISTORY})
    return e2


def test_history_explains_degradation_beyond_a_fresh_model_inside_the_compounded_interval():
    (finding,) = findings("history-explains-degradation", history_checkup(1.40, "inside"))
    assert finding.checkups == ["rtn-w4-g128"] and finding.evidence["observed"] == 1.40
    assert finding.evidence["fresh"] == 1.25 and finding.evidence["compounded_upper"] == 2.76
    assert "4-bit" in finding.explanation and "x1.4" in finding.explanation


def test_history_explains_degradation_quiet_when_not_the_cause():
    assert findings("history-explains-degradation", history_checkup(1.20, "inside")) == []  # a fresh model's loss
    assert findings("history-explains-degradation", history_checkup(4.0, "above")) == []  # beyond even history
    assert findings("history-explains-degradation", history_checkup(1.40, "inside", "at-or-above")) == []
