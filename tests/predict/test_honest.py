"""The expectation says what it rests on: bounded by uniform guessing, unknown methods and unidentified effects
out of domain with a wider interval, joint per-class domain, capped accuracy drops, user folders, --on scoring."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from predict_builders import checkup, demo_facts, examination, facts

from doctor.predict import annotate
from doctor.predict import features as F
from doctor.predict.accuracy import AccuracyPredictor, accuracy_rows, fit_accuracy, load_accuracy
from doctor.predict.fit import fit_degradation
from doctor.predict.predict import Z90, Predictor
from doctor.predict.table import COLUMNS, degradation_rows, read_rows
from doctor.resources import PREDICTORS_DIR
from doctor.results import Measurement

LITERATURE = PREDICTORS_DIR / "data" / "literature.csv"
LLAMA2 = {"params_b": 6.74, "family": "LLaMA-2", "training_tokens": 2e12, "cap": math.log(32000 / 5.47)}


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.load(PREDICTORS_DIR)


def test_bounded_scale_round_trips_and_never_passes_the_cap():
    cap = math.log(32000 / 5.47)
    deltas = np.array([-0.004, 0.0, 0.01, 0.3, 2.0, 6.0, cap * 0.99])
    assert np.allclose(F.from_scale(F.to_scale(deltas, cap), cap), deltas, atol=1e-9)
    t = np.linspace(-20, 60, 200)
    back = F.from_scale(t, cap)
    assert np.all(np.diff(back) >= 0) and back.max() <= cap
    assert F.to_scale(cap * 3, cap) == F.to_scale(cap, cap)  # worse than uniform guessing is the same collapse


def test_sub_2_bit_and_extreme_sparsity_stay_below_uniform_guessing(shipped):
    for case in (F.Case(kind="quantization", method="binary", bits=1.0, method_name="billm", **LLAMA2),
                 F.Case(kind="quantization", method="rtn", bits=1.0, method_name="rtn", **LLAMA2),
                 F.Case(kind="unstructured", method="magnitude", sparsity=0.95, method_name="magnitude", **LLAMA2)):
        pred = shipped.predict_case(case)
        assert pred.delta(Z90) <= case.cap and pred.delta() <= case.cap
        assert not pred.in_domain  # no training row below 1.58 bits or at 95% sparsity
    one_bit = shipped.predict_case(F.Case(kind="quantization", method="rtn", bits=1.0, method_name="rtn", **LLAMA2))
    four_bit = shipped.predict_case(F.Case(kind="quantization", method="rtn", bits=4.0, method_name="rtn", **LLAMA2))
    assert one_bit.delta() > four_bit.delta()


def test_unknown_method_names_are_out_of_domain_and_say_their_class(shipped):
    known = shipped.predict_case(F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128.0,
                                        method_name="gptq", **LLAMA2))
    assert known.in_domain and known.warning is None
    for name, bits, cls in (("billm", 1.1, "binary"), ("frobnicate-q", 4.0, "rtn"), ("pb-llm", 1.7, "binary")):
        case = F.Case(kind="quantization", method=F.method_class(name, "quantization", bits), bits=bits,
                      group_size=128.0, method_name=name, **LLAMA2)
        pred = shipped.predict_case(case)
        assert not pred.in_domain
        assert f"method '{name}' is not in the training table" in pred.warning and f"class '{cls}'" in pred.warning
    unknown = shipped.predict_case(F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128.0,
                                          method_name="my-gptq-variant", **LLAMA2))
    assert unknown.var > known.var


def test_original_quip_is_not_a_codebook_method():
    assert F.method_class("quip", "quantization") == "gptq"
    assert F.method_class("quip-sharp", "quantization") == "codebook"
    assert F.method_class("flap", "structured") == "flap" and F.method_class("slicegpt", "structured") == "slicegpt"


def _literature_without(methods: tuple[str, ...]) -> pd.DataFrame:
    frame = read_rows(LITERATURE)
    return degradation_rows([frame[~frame.method.isin(methods)]])


def test_an_unidentified_class_is_reported_and_widened_not_silently_zero():
    model = fit_degradation(_literature_without(("awq",)))
    assert {"q_awq", "q_awq_cliff"} <= set(model["unidentified"])
    assert all(sd >= 0.5 for sd in model["unidentified"].values())
    predictor = Predictor(model, meta={})
    awq = predictor.predict_case(F.Case(kind="quantization", method="awq", bits=4.0, group_size=128.0,
                                        method_name="awq", **LLAMA2))
    rtn = predictor.predict_case(F.Case(kind="quantization", method="rtn", bits=4.0, group_size=128.0,
                                        method_name="rtn", **LLAMA2))
    assert not awq.in_domain and "not identified by the training table: q_awq" in awq.warning
    assert awq.var > rtn.var + 0.25
    coef = dict(zip(model["features"], model["coef"], strict=True))
    known = [coef[n] for n in ("q_gptq", "q_learned", "q_gguf", "q_codebook")]
    assert coef["q_awq"] == pytest.approx(np.median([0.0, *known]))  # a typical class, not the reference one


def test_a_prediction_that_rests_on_little_leans_on_its_kind_and_bucket(shipped):
    prior_mean, _ = shipped.model["bucket_prior"]["quantization bits=4"]
    known = F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128.0, method_name="gptq", **LLAMA2)
    unknown = F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128.0, method_name="gptq-variant",
                     **LLAMA2)
    x = F.encode(known)
    own = float(x @ shipped.coef) + shipped.family_offset("LLaMA-2")[0]
    a, b = shipped.predict_case(known), shipped.predict_case(unknown)
    assert min(own, prior_mean) <= a.mean <= max(own, prior_mean)
    assert abs(b.mean - prior_mean) < abs(a.mean - prior_mean)  # wider interval, more weight on the table


def test_domain_is_joint_per_method_class(shipped):
    domain = shipped.model["domain"]
    assert "bits:gptq" in domain and "bits:awq" in domain and "log10_params_b:structured" in domain
    assert any(axis.startswith("sparsity:structured:") for axis in domain)
    lo, _ = domain["bits:awq"]
    below = F.Case(kind="quantization", method="awq", bits=lo - 1, group_size=128.0, method_name="awq", **LLAMA2)
    pred = shipped.predict_case(below)
    assert not pred.in_domain and "bits:awq" in pred.warning


def test_calibration_corpus_relation_is_a_feature():
    base = dict(kind="quantization", method="gptq", bits=4.0, group_size=128.0, **LLAMA2)
    same = F.Case(calibration=F.corpus_of("wikitext2 128 samples"), **base)
    other = F.Case(calibration=F.corpus_of("c4-128x2048"), **base)
    free = F.Case(calibration=F.corpus_of("c4-128x2048"), **{**base, "method": "rtn"})
    i = F.FEATURES.index("cal_match")
    assert F.encode(same)[i] == 1.0 and F.encode(other)[i] == 0.0 and F.encode(free)[i] == 0.0
    assert F.corpus_of("data-free") == "none" and F.corpus_of(None) is None


def test_accuracy_drop_is_capped_at_dense_minus_chance_and_refused_far_outside():
    accuracy = load_accuracy(PREDICTORS_DIR)
    case = F.Case(kind="quantization", method="rtn", bits=2.0, group_size=None, method_name="rtn", params_b=6.74,
                  family="LLaMA-2", training_tokens=2e12)
    free = accuracy.expected(case, "acc_drop:t")
    capped = accuracy.expected(case, "acc_drop:t", max_drop=0.05)
    assert free.upper > 0.05 and capped.upper == pytest.approx(0.05) and capped.point <= 0.05
    assert "dense accuracy minus chance" in capped.warning
    assert accuracy.refusal(case) is None
    assert "accuracy drop not predicted" in accuracy.refusal(
        F.Case(kind="quantization", method="rtn", bits=4.0, params_b=2.6e-4, method_name="rtn"))
    tiny = examination(demo_facts(), [checkup("rtn-w4", {"kind": "quantize", "method": "rtn", "bits": 4}, 1.1)],
                       corpus="tinystories-valid", ppl=3.1, seq_len=512)
    tiny.checkups[0].metrics["acc_drop:cloze"] = Measurement(value=0.02, n=100)
    annotate(tiny, PREDICTORS_DIR)
    assert "acc_drop:cloze" not in tiny.checkups[0].expected
    assert "accuracy drop not predicted" in tiny.predictor["skipped"]["rtn-w4:acc_drop"]
    assert isinstance(accuracy, AccuracyPredictor)


def test_accuracy_drop_flags_unknown_methods_and_unidentified_effects():
    accuracy = load_accuracy(PREDICTORS_DIR)
    known = F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128, method_name="gptq", params_b=6.74,
                   family="LLaMA-2", training_tokens=2e12)
    unknown = F.Case(kind="quantization", method="gptq", bits=4.0, group_size=128, method_name="never-seen-q",
                     params_b=6.74, family="LLaMA-2", training_tokens=2e12)
    assert "gptq" in accuracy.model["methods"] and accuracy.predict_case(known).in_domain
    pred = accuracy.predict_case(unknown)
    assert not pred.in_domain and "never-seen-q" in pred.warning and "predicted as class" in pred.warning
    assert pred.var > accuracy.predict_case(known).var
    rows = pd.DataFrame([r for r in accuracy_rows([read_rows(LITERATURE)]).to_dict("records")
                         if r["kind"] == "quantization" and F.case_from_row(r).method != "awq"])
    fit = AccuracyPredictor(fit_accuracy(rows))
    assert "q_awq" in fit.model["unidentified"]
    awq = F.Case(kind="quantization", method="awq", bits=4.0, group_size=128, method_name="awq", params_b=6.74,
                 family="LLaMA-2", training_tokens=2e12)
    pred = fit.predict_case(awq)
    assert not pred.in_domain and "q_awq" in pred.warning
    assert pred.var > fit.predict_case(known).var


def test_annotate_uses_the_given_predictor_folder(tmp_path):
    from doctor.cli import main

    result = CliRunner().invoke(main, ["predictor", "fit", "--out", str(tmp_path / "mine"), "--no-observations"])
    assert result.exit_code == 0, result.output
    assert f"--predictor {tmp_path / 'mine'}" in result.output
    llama = facts(6_740_000_000, "Llama-2-7b-hf")
    exam = examination(llama, [checkup("gptq-w4", {"kind": "quantize", "method": "gptq", "bits": 4}, 1.02)])
    annotate(exam, tmp_path / "mine")
    from doctor.predict.artifact import file_sha256

    assert exam.predictor["sha256"] == file_sha256(tmp_path / "mine" / "degradation.json")
    assert exam.checkups[0].expected["ppl_ratio"].in_domain


def test_fit_and_add_default_to_the_user_folder_never_the_package(tmp_path, user_home, demo_exam):
    from doctor.cli import main

    before = {p.name: p.stat().st_mtime_ns for p in PREDICTORS_DIR.glob("*.json")}
    results = tmp_path / "results.json"
    results.write_text(demo_exam.model_dump_json())
    runner = CliRunner()
    added = runner.invoke(main, ["predictor", "add", str(results)])
    assert added.exit_code == 0, added.output
    assert (user_home / "predictors" / "data" / "observations.csv").is_file()
    fitted = runner.invoke(main, ["predictor", "fit"])
    assert fitted.exit_code == 0, fitted.output
    model = json.loads((user_home / "predictors" / "degradation.json").read_text())
    assert set(model["meta"]["training_tables"]) == {"literature.csv", "observations.csv"}
    assert "stories260k" in model["model"]["training"]["families"]
    assert {p.name: p.stat().st_mtime_ns for p in PREDICTORS_DIR.glob("*.json")} == before
    assert not (PREDICTORS_DIR / "data" / "observations.csv").exists()


def test_examine_refuses_an_unreadable_predictor_folder_before_loading(tmp_path):
    from doctor.cli import main

    result = CliRunner().invoke(main, ["examine", str(tmp_path / "no-model"), "--predictor", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "none" in result.output and "predictor" in result.output and "Traceback" not in result.output


def _scored_table(tmp_path) -> tuple:
    rows = pd.read_csv(LITERATURE, dtype=str, keep_default_na=False)
    part = rows[rows.source == "wanda-readme"].head(12).copy()
    bad = part.iloc[:2].copy()
    bad.loc[bad.index[0], "value"] = "n/a"
    bad.loc[bad.index[1], "baseline_value"] = ""
    table = tmp_path / "mine.csv"
    pd.concat([part, bad])[COLUMNS].to_csv(table, index=False)
    return table, part


def test_evaluate_on_a_table_scores_without_refitting(tmp_path):
    from doctor.cli import main

    table, part = _scored_table(tmp_path)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(main, ["predictor", "evaluate", "--on", str(table), "--json", str(out)])
    assert result.exit_code == 0, result.output
    numbers = json.loads(out.read_text())
    usable = degradation_rows([read_rows(table)])
    assert numbers["overall"]["n"] == len(usable) > 0
    for key in ("n", "mae", "median_ae", "naive_kind_mae", "naive_bucket_mae", "coverage90"):
        assert key in numbers["overall"] and all(key in v for v in numbers["by_kind"].values())
    reasons = " ".join(s["reason"] for s in numbers["skipped"])
    assert "not a number" in reasons and "no dense value" in reasons
    shipped = Predictor.load(PREDICTORS_DIR)
    assert numbers["overall"]["mae"] == pytest.approx(
        np.mean([abs(min(r["delta"], shipped.predict_row(r).cap) - shipped.predict_row(r).point)
                 for r in usable.to_dict("records")]))
    stdout = CliRunner().invoke(main, ["predictor", "evaluate", "--on", str(table), "--json", "-"])
    assert json.loads(stdout.output)["overall"]["n"] == numbers["overall"]["n"]


def test_evaluate_on_a_bad_table_is_one_line(tmp_path):
    from doctor.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("source,value\nx,1\n")
    result = CliRunner().invoke(main, ["predictor", "evaluate", "--on", str(bad)])
    assert result.exit_code == 2 and "bad.csv" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["predictor", "evaluate", "--on", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "nope.csv" in missing.output


def test_unwritable_outputs_are_one_line_errors(tmp_path, demo_exam):
    from doctor.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    runner = CliRunner()
    fitted = runner.invoke(main, ["predictor", "fit", "--no-observations", "--out", str(blocker / "sub")])
    assert fitted.exit_code == 2 and "a-file" in fitted.output and "Traceback" not in fitted.output
    table, _ = _scored_table(tmp_path)
    scored = runner.invoke(main, ["predictor", "evaluate", "--on", str(table), "--json", str(blocker / "x.json")])
    assert scored.exit_code == 2 and "x.json" in scored.output
    results = tmp_path / "results.json"
    results.write_text(demo_exam.model_dump_json())
    added = runner.invoke(main, ["predictor", "add", str(results), "--data", str(blocker)])
    assert added.exit_code == 2 and "a-file" in added.output
