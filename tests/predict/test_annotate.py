"""annotate() on hand-built examinations, per-patient adaptation, baseline health, and the CLI."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner
from predict_builders import checkup, examination, facts

from doctor.predict import annotate
from doctor.predict.adapt import Anchor, adapt, offset_update
from doctor.predict.predict import ScalePrediction
from doctor.resources import PREDICTORS_DIR

FEATURIZABLE = {"rtn-w8", "rtn-w4g32", "gptq-w3", "wanda-50", "wanda-24", "drop-1", "wanda-then-rtn4"}


def test_annotate_fills_expectations(demo_exam):
    annotate(demo_exam, PREDICTORS_DIR)
    by_id = {c.id: c for c in demo_exam.checkups}
    assert {cid for cid, c in by_id.items() if "ppl_ratio" in c.expected} == FEATURIZABLE
    for cid in FEATURIZABLE:
        e = by_id[cid].expected["ppl_ratio"]
        observed = by_id[cid].value("ppl_ratio")
        assert e.lower <= e.point <= e.upper and e.level == 0.9
        assert e.residual == pytest.approx(math.log(observed) - math.log(e.point))
        expected_side = "above" if observed > e.upper else "below" if observed < e.lower else "inside"
        assert e.outside == expected_side
        assert not e.in_domain and "outside the training domain" in e.warning  # 260K params
        assert e.upper <= 512 / 3.1 + 1e-9  # never beyond the uniform-guess ratio (vocab / dense PPL)
    # mild checkups anchor the adaptation and keep their prior; harsher ones carry both
    assert demo_exam.predictor["adaptation"]["anchors"] == ["rtn-w8", "rtn-w4g32"]
    assert by_id["rtn-w8"].expected["ppl_ratio"].prior_point is None
    for cid in ("gptq-w3", "wanda-50", "drop-1"):
        e = by_id[cid].expected["ppl_ratio"]
        assert e.prior_point is not None and e.prior_lower <= e.prior_point <= e.prior_upper
    assert "composed" in by_id["wanda-then-rtn4"].expected["ppl_ratio"].warning
    assert set(demo_exam.predictor["skipped"]) == {"beam"}
    assert len(demo_exam.predictor["sha256"]) == 64 and demo_exam.predictor["artifact"] == "degradation.json"
    assert demo_exam.baseline.health["verdict"] == "not-assessed"  # TinyStories is not in the health table
    json.loads(demo_exam.model_dump_json())  # the record stays serialisable


def test_health_verdicts_for_an_in_domain_model():
    llama = facts(6_740_000_000, "Llama-2-7b-hf")
    verdicts = {}
    for ppl in (5.47, 2.0, 40.0):
        exam = examination(llama, [checkup("gptq-w4", {"kind": "quantize", "method": "gptq", "bits": 4}, 1.02)],
                           ppl=ppl)
        annotate(exam, PREDICTORS_DIR)
        h = exam.baseline.health
        assert h["lower"] < h["expected"] < h["upper"] and h["in_domain"]
        verdicts[ppl] = h["verdict"]
        assert exam.checkups[0].expected["ppl_ratio"].in_domain
    assert verdicts == {5.47: "ok", 2.0: "better-than-expected", 40.0: "worse-than-expected"}


def _pred(mean: float, var: float = 1.0, offset_var: float = 0.5) -> ScalePrediction:
    return ScalePrediction(mean, var, True, None, offset_var)


def test_adaptation_moves_towards_the_patients_own_offset():
    target = _pred(-1.0)
    high = [Anchor(_pred(-4.0), math.exp(-2.0) - 0.01) for _ in range(3)]  # observed 2 units above prior mean
    adapted = adapt(target, high)
    assert adapted.mean > target.mean and adapted.var < target.var
    assert adapt(target, []) == target
    shift_one, var_one = offset_update(high[:1], 0.5)
    shift_three, var_three = offset_update(high, 0.5)
    assert 0 < shift_one < shift_three < 2.0 and var_three < var_one < 0.5  # more anchors, more weight


def test_cli_add_fit_show(tmp_path, demo_exam):
    from doctor.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "literature.csv").write_bytes((PREDICTORS_DIR / "data" / "literature.csv").read_bytes())
    results = tmp_path / "results.json"
    results.write_text(demo_exam.model_dump_json())
    runner = CliRunner()
    added = runner.invoke(main, ["predictor", "add", str(results), "--data", str(data)])
    assert added.exit_code == 0, added.output
    assert "added 7 rows" in added.output  # the dense row and six single-step checkups
    again = runner.invoke(main, ["predictor", "add", str(results), "--data", str(data)])
    assert "already" in again.output
    fitted = runner.invoke(main, ["predictor", "fit", "--data", str(data), "--out", str(tmp_path)])
    assert fitted.exit_code == 0, fitted.output
    model = json.loads((tmp_path / "degradation.json").read_text())
    assert set(model["meta"]["training_tables"]) == {"literature.csv", "observations.csv"}
    assert "stories260k" in model["model"]["training"]["families"]
    shown = runner.invoke(main, ["predictor", "show", "--dir", str(tmp_path)])
    assert shown.exit_code == 0 and "q_bits" in shown.output and "domain:" in shown.output
    bad = runner.invoke(main, ["predictor", "add", str(tmp_path / "nope.json"), "--data", str(data)])
    assert bad.exit_code == 2 and "nope.json" in bad.output


def test_cli_evaluate_prints_held_out_tables(tmp_path):
    from doctor.cli import main

    data = tmp_path / "data"
    data.mkdir()
    table = pd.read_csv(PREDICTORS_DIR / "data" / "literature.csv", dtype=str, keep_default_na=False)
    keep = ("OPT", "BLOOM", "Falcon")  # a small table keeps the refits fast
    table[table.model_family.isin(keep)].to_csv(data / "literature.csv", index=False)
    out = tmp_path / "numbers.json"
    result = CliRunner().invoke(main, ["predictor", "evaluate", "--data", str(data), "--by", "family", "--groups",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Leave-one-family-out" in result.output and "3 families" in result.output
    header = next(line for line in result.output.splitlines() if line.startswith("kind"))
    assert header.split() == ["kind", "n", "mae", "median_ae", "naive_kind_mae", "naive_bucket_mae",
                              "naive_bucket_median_ae", "coverage90", "median_width", "in_domain"]
    assert "quantization bits=3" in result.output  # the per-bucket table
    overall = next(line for line in result.output.splitlines() if line.startswith("overall")).split()
    assert overall[-3].endswith("%") and float(overall[2]) >= 0
    assert all(f in result.output for f in keep)  # --groups: one row per held-out family
    numbers = json.loads(out.read_text())
    assert numbers["mode"] == "leave-one-family-out" and numbers["skipped"] == []
    assert {"n", "mae", "median_ae", "naive_kind_mae", "naive_bucket_mae", "coverage90"} <= set(numbers["overall"])
    assert "quantization" in numbers["by_kind"] and numbers["beyond_uniform_guessing"] == 0
