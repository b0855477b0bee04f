"""Fixtures for the predictor tests."""

from __future__ import annotations

import pytest
from predict_builders import checkup, demo_facts, examination

from doctor.results import Examination


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    """The user's predictors folder lives in a fresh temporary home: no test reads or writes a real one."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODEL_DOCTOR_HOME", str(home))
    return home


@pytest.fixture
def demo_exam() -> Examination:
    return examination(demo_facts(), [
        checkup("rtn-w8", {"kind": "quantize", "method": "rtn", "bits": 8}, 1.001, {"bits": 8}),
        checkup("rtn-w4g32", {"kind": "quantize", "method": "rtn", "bits": 4, "group_size": 32}, 1.08),
        checkup("gptq-w3", {"kind": "quantize", "method": "gptq", "bits": 3, "group_size": 32}, 1.4),
        checkup("wanda-50", {"kind": "prune", "method": "wanda", "structure": "unstructured", "sparsity": 0.5},
                1.5, {"sparsity": 0.49}),
        checkup("wanda-24", {"kind": "prune", "method": "wanda", "structure": "nm", "n": 2, "m": 4}, 2.0),
        checkup("drop-1", {"kind": "remove_layers", "count": 1, "by": "block_influence"}, 1.9),
        checkup("wanda-then-rtn4", {"kind": "compose", "steps": [
            {"kind": "prune", "method": "wanda", "structure": "unstructured", "sparsity": 0.5},
            {"kind": "quantize", "method": "rtn", "bits": 4}]}, 1.7),
        checkup("beam", {"kind": "decode", "strategy": "beam"}, None),
        checkup("broken", {"kind": "quantize", "method": "gptq", "bits": 2}, None, status="error"),
    ], corpus="tinystories-valid", ppl=3.1, seq_len=512)
