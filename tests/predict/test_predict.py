"""Artifacts round-trip exactly; predictions are honest about the training domain; cases use realized values."""

from __future__ import annotations

import json
import math

import pytest
from predict_builders import demo_facts, facts

from doctor.errors import DataError
from doctor.predict import features as F
from doctor.predict.artifact import DEGRADATION_FILE, HEALTH_FILE, dumps, load_artifact, save_artifact
from doctor.predict.cases import Unsupported, cases_for
from doctor.predict.predict import Predictor
from doctor.predict.table import family_fact
from doctor.resources import PREDICTORS_DIR

RTN3 = {"kind": "quantize", "method": "rtn", "bits": 3, "group_size": 128}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(PREDICTORS_DIR)


def test_artifact_round_trips_exactly(tmp_path):
    original = json.loads((PREDICTORS_DIR / DEGRADATION_FILE).read_text())
    save_artifact(original, tmp_path / DEGRADATION_FILE)
    loaded = load_artifact(tmp_path / DEGRADATION_FILE, expect="degradation")
    assert loaded == original
    assert dumps(loaded) == (tmp_path / DEGRADATION_FILE).read_text()
    a, b = Predictor.load(PREDICTORS_DIR), Predictor.load(tmp_path)
    case = F.Case(params_b=7.0, kind="quantization", method="gptq", bits=3.0, group_size=128.0)
    assert a.predict_case(case) == b.predict_case(case)


def test_artifacts_are_plain_json_with_provenance():
    for name, kind in ((DEGRADATION_FILE, "degradation"), (HEALTH_FILE, "baseline-health")):
        artifact = load_artifact(PREDICTORS_DIR / name, expect=kind)
        meta = artifact["meta"]
        assert set(meta["training_tables"]) >= {"literature.csv"}
        assert all(len(sha) == 64 for sha in meta["training_tables"].values())
        assert {"statsmodels", "numpy", "model-doctor"} <= set(meta["libraries"])
        assert {"coef", "cov", "resid_var", "family_var", "domain", "features", "training"} <= set(artifact["model"])
    assert load_artifact(PREDICTORS_DIR / DEGRADATION_FILE, "degradation")["model"]["features"] == list(F.FEATURES)


def test_bad_artifact_is_one_line_error(tmp_path):
    (tmp_path / DEGRADATION_FILE).write_text('{"meta": {"format": "other"}}')
    with pytest.raises(DataError, match="degradation.json"):
        Predictor.load(tmp_path)
    with pytest.raises(DataError, match="predictor fit"):
        Predictor.load(tmp_path / "missing")


def test_out_of_domain_patient_gets_wider_interval_and_warning(predictor):
    inside = predictor.predict(facts(125_000_000, "small-in-domain", layers=12, hidden=768), RTN3)
    outside = predictor.predict(demo_facts(), RTN3)
    assert inside.in_domain and inside.warning is None
    assert not outside.in_domain
    assert "outside the training domain" in outside.warning and "parameters" in outside.warning
    # the same clamped size (the point moves only as far as the wider interval leans on the table's bucket mean),
    # so the widening shows directly in the log-width of the interval
    assert outside.point == pytest.approx(inside.point, rel=0.05)
    assert math.log(outside.upper / outside.lower) > 1.5 * math.log(inside.upper / inside.lower)


def test_prediction_is_monotone_in_bits_and_sparsity(predictor):
    llama = facts(6_740_000_000, "Llama-2-7b-hf")
    points = [predictor.predict(llama, {**RTN3, "bits": b}).point for b in (2, 3, 4, 8)]
    assert points == sorted(points, reverse=True) and points[-1] < 1.01 < points[0]
    prune = [predictor.predict(llama, {"kind": "prune", "method": "wanda", "sparsity": s}).point
             for s in (0.2, 0.5, 0.7)]
    assert prune == sorted(prune)
    d = [math.log(p) for p in prune]
    assert (d[2] - d[1]) / 0.2 > (d[1] - d[0]) / 0.3  # the collapse: damage per unit sparsity grows
    for e in (predictor.predict(llama, RTN3),):
        assert e.lower < e.point < e.upper and e.level == 0.9


def test_realized_values_beat_requested():
    mod = {"kind": "prune", "method": "wanda", "structure": "unstructured", "sparsity": 0.5}
    [case] = cases_for(demo_facts(), mod, {"sparsity": 0.47})
    assert case.sparsity == 0.47 and case.kind == "unstructured"
    [heads] = cases_for(demo_facts(), {"kind": "prune", "method": "magnitude", "structure": "heads",
                                       "sparsity": 0.5}, {"params_ratio": 0.8})
    assert heads.kind == "structured" and heads.sparsity == pytest.approx(0.2)
    [layers] = cases_for(demo_facts(), {"kind": "remove_layers", "fraction": 0.2}, {"layers_removed": [3, 4]})
    assert layers.kind == "layer-removal" and layers.sparsity == pytest.approx(2 / 5)
    [nm] = cases_for(demo_facts(), {"kind": "prune", "method": "sparsegpt", "structure": "nm", "n": 2, "m": 4})
    assert nm.kind == "semi-structured" and nm.sparsity == 0.5
    with pytest.raises(Unsupported):
        cases_for(demo_facts(), {"kind": "onnx", "quantize": "dynamic-int8"})


def test_family_facts_lookup():
    assert family_fact("LLaMA-2").training_tokens == 2.0e12
    assert family_fact(None, "Meta-Llama-3-8B").family == "LLaMA-3"
    assert family_fact("LLaMA", "LLaMA-65B").training_tokens == 1.4e12
    assert family_fact(None, "gemma-3-1b-it").training_tokens == 2e12
    assert family_fact("Mistral").training_tokens is None
    assert family_fact(None, "stories260k") is None
