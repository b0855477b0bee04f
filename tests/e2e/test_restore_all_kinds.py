"""After a whole examination with every modification kind, the demo model is bit-for-bit what it was."""

from __future__ import annotations

import torch

from doctor.runner import Options, examine
from doctor.spec.checkup import Suite
from tests.conftest import assert_bit_identical, state_snapshot

KINDS = [
    {"kind": "quantize", "method": "rtn", "bits": 3, "group_size": 32},
    {"kind": "quantize", "method": "gptq", "bits": 3, "group_size": 32, "act_order": True},
    {"kind": "quantize", "method": "awq", "bits": 3, "group_size": 32},
    {"kind": "prune", "method": "magnitude", "sparsity": 0.5},
    {"kind": "prune", "method": "wanda", "structure": "nm", "n": 2, "m": 4},
    {"kind": "prune", "method": "sparsegpt", "sparsity": 0.5},
    {"kind": "prune", "method": "wanda", "structure": "heads", "sparsity": 0.25},
    {"kind": "prune", "method": "magnitude", "structure": "channels", "sparsity": 0.3},
    {"kind": "remove_layers", "count": 1},
    {"kind": "expand_layers", "count": 2, "init": "copy"},
    {"kind": "expand_layers", "count": 1, "init": "identity"},
    {"kind": "decode", "strategy": "sample", "temperature": 0.8},
    {"kind": "compose", "steps": [{"kind": "prune", "method": "wanda", "sparsity": 0.5},
                                  {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32}]},
]


def test_every_kind_restores_the_demo_model_exactly(demo_patient, tmp_path):
    model = demo_patient.model
    before = state_snapshot(model)
    config_before = model.config.to_dict()
    suite = Suite.model_validate({
        "name": "all-kinds",
        "eval": {"corpus": "auto", "max_windows": 1, "bootstrap": 0},
        "calibration": {"corpus": "auto", "samples": 4, "seq_len": 64},
        "checkups": [{"id": f"k{i}", "modification": spec, "metrics": ["perplexity"]} for i, spec in enumerate(KINDS)],
    })
    exam = examine(demo_patient, suite, Options(out_dir=tmp_path, use_predictor=False))
    errors = {c.id: c.error for c in exam.checkups if c.status != "ok"}
    assert not errors
    assert_bit_identical(model, before)
    assert model.config.to_dict() == config_before
    # the function is back too: same logits as a fresh forward before any change
    ids = torch.arange(1, 33)[None]
    with torch.no_grad():
        logits = model(ids).logits
    model.load_state_dict(before)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)
