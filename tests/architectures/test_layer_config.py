"""Layer removal and expansion keep per-layer config fields true, and a field that cannot be set never breaks
the restore (the Mamba `layer_types` crash)."""

from __future__ import annotations

import pytest
from arch_zoo import tiny_model

from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.base import UndoLog
from doctor.spec.modification import ExpandLayersSpec, RemoveLayersSpec
from tests.conftest import as_patient, make_context


def test_a_refused_attribute_set_leaves_nothing_to_undo():
    class Config:
        @property
        def layer_types(self):
            return ["a", "b"]

    undo = UndoLog()
    with pytest.raises(AttributeError):
        undo.set_attr(Config(), "layer_types", ["a"])
    assert len(undo) == 0
    undo.restore()


@pytest.mark.parametrize("spec", [RemoveLayersSpec(by="indices", indices=[0]), ExpandLayersSpec(count=2)],
                         ids=["remove", "expand"])
def test_mamba_layer_count_changes_and_restores(spec, tmp_path):
    model = tiny_model("mamba")
    config = model.config.to_dict()
    ctx = make_context(as_patient(model, "mamba"), tmp_path, samples=2, seq_len=16)
    applied = apply_modification(spec, ctx)
    assert model.config.num_hidden_layers == applied.realized["layers_after"]
    assert len(model.config.layer_types) == applied.realized["layers_after"]  # derived from the count
    ctx.undo.restore()
    assert model.config.to_dict() == config


def test_bamba_attention_layer_indices_follow_the_blocks(tmp_path):
    model = tiny_model("bamba")
    assert model.config.attn_layer_indices == [1]
    ctx = make_context(as_patient(model, "bamba"), tmp_path, samples=2, seq_len=16)
    apply_modification(RemoveLayersSpec(by="indices", indices=[0]), ctx)
    assert model.config.attn_layer_indices == [0] and model.config.layers_block_type == ["full_attention"]
    ctx.undo.restore()
    assert model.config.attn_layer_indices == [1]


def test_jamba_refuses_an_order_its_config_cannot_describe(tmp_path):
    model = tiny_model("jamba")
    ctx = make_context(as_patient(model, "jamba"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(ModificationError, match="^unsupported: .*attn_layer_period"):
        apply_modification(RemoveLayersSpec(by="indices", indices=[0]), ctx)
    ctx.undo.restore()
    applied = apply_modification(RemoveLayersSpec(by="indices", indices=[1]), ctx)  # layer 0 stays layer 0
    assert applied.realized["layers_after"] == 1
    ctx.undo.restore()
