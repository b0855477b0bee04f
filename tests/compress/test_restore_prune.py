"""Restore is bit-exact for every pruning and layer kind: state dict keys, shapes, bytes, config and modules."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_bit_identical, make_context, state_snapshot
from pydantic import TypeAdapter

from doctor.modifications import apply_modification
from doctor.spec.modification import Modification

SPECS = {
    "magnitude-50": {"kind": "prune", "method": "magnitude", "sparsity": 0.5},
    "wanda-50": {"kind": "prune", "method": "wanda", "sparsity": 0.5},
    "wanda-2:4": {"kind": "prune", "method": "wanda", "structure": "nm", "n": 2, "m": 4},
    "sparsegpt-60": {"kind": "prune", "method": "sparsegpt", "sparsity": 0.6},
    "sparsegpt-true-sequential": {"kind": "prune", "method": "sparsegpt", "sparsity": 0.5, "true_sequential": True},
    "sparsegpt-4:8": {"kind": "prune", "method": "sparsegpt", "structure": "nm", "n": 4, "m": 8},
    "heads-magnitude": {"kind": "prune", "structure": "heads", "sparsity": 0.5},
    "heads-wanda": {"kind": "prune", "method": "wanda", "structure": "heads", "sparsity": 0.5},
    "heads-query": {"kind": "prune", "structure": "heads", "sparsity": 0.5, "head_unit": "query"},
    "channels-wanda": {"kind": "prune", "method": "wanda", "structure": "channels", "sparsity": 0.3},
    "remove-bi": {"kind": "remove_layers", "count": 1},
    "remove-first": {"kind": "remove_layers", "by": "first", "count": 1},
    "expand-identity": {"kind": "expand_layers", "count": 2},
    "expand-copy": {"kind": "expand_layers", "count": 1, "init": "copy", "placement": "end"},
    "compose-heads-wanda-remove": {
        "kind": "compose",
        "steps": [
            {"kind": "prune", "structure": "channels", "sparsity": 0.25},
            {"kind": "expand_layers", "count": 1},
            {"kind": "prune", "method": "sparsegpt", "sparsity": 0.5},
            {"kind": "remove_layers", "count": 1},
        ],
    },
}
GQA_ONLY = {"heads-query"}


def _config(model) -> dict:
    return model.config.to_dict()


def _modules(model) -> list[tuple[str, int]]:
    return [(name, id(module)) for name, module in model.named_modules()]


def _hooks(model) -> int:
    """Forward hooks present (transformers installs its own output-capturing hooks on first use)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("key", list(SPECS))
@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2", "demo_patient"])
def test_restore_is_bit_exact(patient, key, request, tmp_path):
    patient = request.getfixturevalue(patient)
    model = patient.model
    if key in GQA_ONLY and model.config.model_type == "gpt2":
        pytest.skip("GPT-2 has one query head per KV head")
    spec = TypeAdapter(Modification).validate_python(SPECS[key])
    snapshot, config, modules, hooks = state_snapshot(model), _config(model), _modules(model), _hooks(model)
    ids = torch.randint(3, patient.facts.vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    ctx = make_context(patient, tmp_path, samples=4, seq_len=32)
    try:
        apply_modification(spec, ctx)
        changed = _modules(model) != modules or not torch.equal(model(input_ids=ids).logits, before)
        assert changed or key == "expand-identity"
    finally:
        ctx.undo.restore()
    assert_bit_identical(model, snapshot)
    assert _config(model) == config
    assert _modules(model) == modules
    assert _hooks(model) == hooks  # no calibration hook left behind
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
