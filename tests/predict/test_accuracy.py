"""The accuracy-drop model: recovers a known law, round-trips exactly, annotates acc_drop, evaluates LOFO."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from predict_builders import checkup, examination, facts

from doctor.predict import annotate
from doctor.predict import features as F
from doctor.predict.accuracy import (
    ACCURACY_FILE,
    FEATURES,
    AccuracyPredictor,
    accuracy_rows,
    fit_accuracy,
    from_scale,
    held_out_accuracy,
    load_accuracy,
    to_scale,
)
from doctor.predict.artifact import load_artifact, make_meta, save_artifact
from doctor.predict.evaluate import summarize
from doctor.predict.table import COLUMNS, family_fact, read_rows
from doctor.resources import PREDICTORS_DIR
from doctor.results import Measurement

LAW = {"const": 1.5, "lp": -0.4, "q_bits": -0.3, "q_cliff": 1.6, "q_gptq": -0.3, "q_learned": -0.6,
       "k_structured": 2.0, "s_s": 10.0}
MODELS = {"LLaMA-2": [("LLaMA-2-7B", 7.0), ("LLaMA-2-13B", 13.0), ("LLaMA-2-70B", 70.0)],
          "LLaMA": [("LLaMA-7B", 7.0), ("LLaMA-30B", 32.5)], "Mistral": [("Mistral-7B", 7.0)],
          "Qwen2.5": [("Qwen2.5-0.5B", 0.5), ("Qwen2.5-7B", 7.0)]}
NOISE_SD = 0.2


def synthetic_table(seed: int) -> pd.DataFrame:
    """Accuracy rows in literature.csv layout whose drop follows LAW on the model scale plus known noise."""
    rng = np.random.default_rng(seed)
    settings = [("quantization", m, b, 128, None) for m in ("rtn", "gptq", "autoround") for b in (2, 3, 4, 6)]
    settings += [("structured", m, None, None, s) for m in ("llm-pruner-l2", "llm-pruner-taylor") for s in (0.1, 0.2)]
    rows = []
    for family, models in MODELS.items():
        for model, params in models:
            for kind, method, bits, group, sparsity in settings:
                row = dict.fromkeys(COLUMNS)
                row.update(source="synthetic", model_family=family, model=model, params_b=params, method=method,
                           kind=kind, bits=bits, group_size=group, sparsity=sparsity, metric="zero_shot_avg_acc",
                           baseline_value=65.0, notes="")
                fact = family_fact(family, model)
                x = dict(zip(F.FEATURES, F.encode(F.case_from_row({**row, "training_tokens": fact.training_tokens})),
                             strict=True))
                t = sum(LAW.get(k, 0.0) * v for k, v in x.items()) + rng.normal(0, NOISE_SD)
                row["value"] = 65.0 - float(from_scale(t))
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture(scope="module")
def synthetic_model() -> dict:
    return fit_accuracy(accuracy_rows([synthetic_table(0)]))


def test_fit_recovers_known_law(synthetic_model):
    coef = dict(zip(synthetic_model["features"], synthetic_model["coef"], strict=True))
    se = dict(zip(synthetic_model["features"], np.sqrt(np.diag(synthetic_model["cov"])), strict=True))
    for name in FEATURES:
        true = LAW.get(name, 0.0)
        if se[name] > 0:  # identifiable in this table
            assert abs(coef[name] - true) < max(4 * se[name], 0.05), (name, coef[name], true, se[name])
    assert math.sqrt(synthetic_model["resid_var"]) == pytest.approx(NOISE_SD, rel=0.25)
    assert synthetic_model["training"]["rows_by_kind"] == {"quantization": 96, "structured": 32}


def test_interval_covers_fresh_draws(synthetic_model):
    predictor = AccuracyPredictor(synthetic_model)
    fresh = accuracy_rows([synthetic_table(1)])
    preds = [predictor.predict_case(F.case_from_row(r)) for r in fresh.to_dict("records")]
    t = np.asarray(to_scale(fresh.delta.to_numpy(dtype=float)))
    z = np.abs(t - np.array([p.mean for p in preds])) / np.array([p.sd for p in preds])
    assert 0.8 <= float(np.mean(z <= 1.645)) <= 0.99


def test_round_trip_is_exact(synthetic_model, tmp_path):
    artifact = {"meta": make_meta("accuracy-drop", [], "test"), "model": synthetic_model}
    save_artifact(artifact, tmp_path / ACCURACY_FILE)
    assert load_artifact(tmp_path / ACCURACY_FILE, expect="accuracy-drop") == json.loads(json.dumps(artifact))
    loaded = load_accuracy(tmp_path)
    case = F.Case(params_b=7.0, kind="quantization", method="gptq", bits=3.0, group_size=128.0)
    a, b = AccuracyPredictor(synthetic_model).predict_case(case), loaded.predict_case(case)
    assert (a.mean, a.var) == (b.mean, b.var)


def _acc_checkup(cid: str, modification: dict, drop: float | None, ppl: float = 1.05, status: str = "ok"):
    c = checkup(cid, modification, ppl, status=status)
    if drop is not None:
        c.metrics["acc_drop:arc_easy"] = Measurement(value=drop, n=500)
    return c


def test_annotate_fills_acc_drop_expectations():
    llama = facts(6_740_000_000, "Llama-2-7b-hf")
    exam = examination(llama, [
        _acc_checkup("gptq-w4", {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 128}, 0.01),
        _acc_checkup("rtn-w2", {"kind": "quantize", "method": "rtn", "bits": 2, "group_size": 128}, 0.30),
        _acc_checkup("rtn-w8-noacc", {"kind": "quantize", "method": "rtn", "bits": 8}, None),
        _acc_checkup("wanda-50", {"kind": "prune", "method": "wanda", "structure": "unstructured",
                                  "sparsity": 0.5}, 0.05),
        _acc_checkup("broken", {"kind": "quantize", "method": "rtn", "bits": 3}, 0.2, status="error"),
    ])
    annotate(exam, PREDICTORS_DIR)
    by_id = {c.id: c for c in exam.checkups}
    assert "acc_drop:arc_easy" not in by_id["rtn-w8-noacc"].expected
    assert "acc_drop:arc_easy" not in by_id["broken"].expected
    assert "acc_drop:arc_easy" not in by_id["wanda-50"].expected  # no published unstructured accuracy drops
    assert "wanda-50:acc_drop" in exam.predictor["skipped"]
    w4, w2 = (by_id[c].expected["acc_drop:arc_easy"] for c in ("gptq-w4", "rtn-w2"))
    for cid, e in (("gptq-w4", w4), ("rtn-w2", w2)):
        observed = by_id[cid].metrics["acc_drop:arc_easy"].value
        assert e.lower <= e.point <= e.upper and e.level == 0.9 and e.upper < 1.0  # fraction scale
        assert e.residual == pytest.approx(observed - e.point)
        assert e.outside == ("above" if observed > e.upper else "below" if observed < e.lower else "inside")
        assert e.z is not None and math.isfinite(e.z) and "this task differs" in e.warning
        assert e.in_domain and e.predictor == ACCURACY_FILE
    assert w2.point > 5 * w4.point  # the low-bit cliff
    assert exam.predictor["accuracy_artifact"]["expectations"] == 2
    json.loads(exam.model_dump_json())


def test_literature_leave_one_family_out():
    frame = accuracy_rows([read_rows(PREDICTORS_DIR / "data" / "literature.csv")])
    assert frame.model_family.nunique() >= 5 and (frame.delta.abs() < 60).all()
    held = held_out_accuracy(frame)
    assert len(held) == len(frame) and np.all(held.lower <= held.pred) and np.all(held.pred <= held.upper)
    overall = summarize(held).set_index("kind").loc["overall"]
    assert 0.8 <= overall.coverage90 <= 0.99
    assert overall.mae < overall.naive_bucket_mae


def test_cli_evaluate_and_show_report_accuracy():
    from doctor.cli.predictor import predictor

    runner = CliRunner()
    out = runner.invoke(predictor, ["evaluate"])
    assert out.exit_code == 0, out.output
    assert "accuracy drop in percentage points" in out.output
    shown = runner.invoke(predictor, ["show", "--dir", str(PREDICTORS_DIR)])
    assert shown.exit_code == 0 and "accuracy drop (accuracy-drop.json" in shown.output


def test_out_of_domain_widens_and_warns(synthetic_model):
    predictor = AccuracyPredictor(synthetic_model)
    inside = predictor.predict_case(F.Case(params_b=7.0, kind="quantization", method="rtn", bits=4.0,
                                           group_size=128.0))
    tiny = predictor.predict_case(F.Case(params_b=2.6e-4, kind="quantization", method="rtn", bits=4.0,
                                         group_size=128.0))
    assert inside.in_domain and inside.warning is None
    assert not tiny.in_domain and "outside the training domain" in tiny.warning and tiny.var > inside.var
