"""`doctor examine smollm2-135m` end to end on a few windows: RTN at and below the existing grid, GPTQ on all 30
layers with 4 calibration samples, and one structured method, against ranges measured on this checkpoint.

Measured (torch 2.13 CPU, float32, WikiText-2 test, 4 windows x 512 tokens, calibration 4 x 512 of WikiText-2
validation, seed 0): baseline perplexity 29.98; ppl ratio rtn-w4-g32 1.269, rtn-w4-g128 1.365, gptq-w3-g128
6.24, heads-25 (magnitude) 21.2. About 90 s of CPU time on top of the one-off GGUF conversion.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from doctor.cli import main

pytestmark = pytest.mark.realmodel

SUITE = """\
name: smollm2-ci
eval: {corpus: auto, seq_len: 512, max_windows: 4, bootstrap: 200, seed: 0}
calibration: {corpus: auto, samples: 4, seq_len: 512, seed: 0}
checkups:
  - id: rtn-w4-g32
    modification: {kind: quantize, method: rtn, bits: 4, group_size: 32}
  - id: rtn-w4-g128
    modification: {kind: quantize, method: rtn, bits: 4, group_size: 128}
  - id: gptq-w3-g128
    modification: {kind: quantize, method: gptq, bits: 3, group_size: 128}
  - id: heads-25
    modification: {kind: prune, method: magnitude, structure: heads, sparsity: 0.25}
"""
RANGES = {"rtn-w4-g32": (1.20, 1.35), "rtn-w4-g128": (1.28, 1.45), "gptq-w3-g128": (4.0, 9.0),
          "heads-25": (12.0, 35.0)}


@pytest.fixture(scope="module")
def examined(smollm2_patient, tmp_path_factory):  # the patient fixture fills the session's GGUF cache first
    folder = tmp_path_factory.mktemp("smollm2")
    (folder / "suite.yaml").write_text(SUITE)
    result = CliRunner().invoke(main, ["examine", "smollm2-135m", "--suite", str(folder / "suite.yaml"),
                                       "--out", str(folder / "r"), "--fail-on", "critical"])
    return result, folder / "r"


def test_examination_numbers_within_measured_ranges(examined):
    result, out = examined
    assert result.exit_code in (0, 1), result.output
    exam = json.loads((out / "results.json").read_text())
    assert 27.0 <= exam["baseline"]["metrics"]["ppl"]["value"] <= 33.0
    assert exam["baseline"]["text"]["corpus"] == "wikitext2-test" and exam["baseline"]["text"]["windows"] == 4
    for c in exam["checkups"]:
        lo, hi = RANGES[c["id"]]
        assert c["status"] == "ok" and lo <= c["metrics"]["ppl_ratio"]["value"] <= hi, c["id"]


def test_report_shows_real_name_facts_history_and_accounted_expectations(examined):
    _, out = examined
    exam = json.loads((out / "results.json").read_text())
    patient = exam["patient"]
    assert patient["id"] == "SmolLM2-135M-Instruct.Q4_1" and patient["family"] == "SmolLM2"
    assert patient["training_tokens"] == 2e12 and patient["source_format"] == "gguf"
    assert exam["baseline"]["health"]["verdict"] == "ok"  # 2T tokens known: no "training tokens unknown"
    expected = {c["id"]: c["expected"]["ppl_ratio"] for c in exam["checkups"]}
    assert expected["rtn-w4-g32"]["history"] == "at-or-above" and expected["rtn-w4-g32"]["lower"] == 1.0
    assert expected["rtn-w4-g128"]["history"] == "below"
    assert expected["rtn-w4-g128"]["point"] == expected["rtn-w4-g128"]["fresh_point"]
    assert expected["heads-25"]["history"] is None  # pruning is not judged against the grid
    (history,) = [f for f in exam["findings"] if f["rule"] == "prior-quantization"]
    assert history["evidence"]["bits"] == 4 and history["evidence"]["group_size"] == 32
    report = (out / "report.md").read_text()
    for text in ("SmolLM2-135M-Instruct.Q4_1", "GGUF tensor types", "Q4_1 78.9%", "dequantized checkpoint",
                 "Already quantized before this examination", "SmolLM2"):
        assert text in report, text
