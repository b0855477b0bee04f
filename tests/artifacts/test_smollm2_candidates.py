"""SmolLM2-135M's own GGUF (Q4_1) judged as a candidate against the model loaded from it, next to a copy of it
re-quantized to Q8_0 with the gguf package: the file itself must measure as the original exactly, the Q8_0 copy
nearly so (measured: KL 0.0005-0.001 on 2 windows of 512 WikiText-2 tokens)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from doctor.cli import main
from tests.artifacts.gguf_writers import requantize_gguf

pytestmark = pytest.mark.realmodel


def test_smollm2_gguf_against_requantized_copies(smollm2_patient, smollm2_path, tmp_path):
    q8 = requantize_gguf(smollm2_path, tmp_path / "smollm2-q8_0.gguf", "Q8_0")
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["examine", "smollm2-135m", "--max-windows", "2", "--candidate", str(smollm2_path),
                                       "--candidate", str(q8), "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    by_id = {c["id"]: c for c in json.loads((out / "results.json").read_text())["checkups"]}
    original = by_id["candidate-SmolLM2-135M-Instruct.Q4_1"]
    assert original["status"] == "ok", original["error"]
    assert original["realized"]["changed_share"] == 0.0 and original["metrics"]["kl_mean"]["value"] < 1e-6
    assert original["realized"]["dominant_type"] == "Q4_1"
    copy = by_id["candidate-smollm2-q8_0"]
    assert copy["realized"]["dominant_type"] == "Q8_0" and copy["realized"]["bits"] == 8
    assert 0 < copy["metrics"]["kl_mean"]["value"] < 0.01
    assert copy["realized"]["grid"]["found"]["bits"] >= 6
