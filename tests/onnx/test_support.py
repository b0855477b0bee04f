"""What the exporter cannot express is one "unsupported: reason": decided up front from the layout (Mamba),
read off the exported graph (a fixed sequence axis), or translated from the exporter's own failure."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from doctor.architectures import Unsupported
from doctor.architectures.moe import SplitExperts
from doctor.onnx import export as export_module
from doctor.onnx.export import export_model
from doctor.onnx.support import require_dynamic_sequence, require_exportable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "architectures"))
from arch_zoo import tiny_model  # noqa: E402


def _identity_graph(path: Path, seq) -> Path:
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])
    out = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", seq])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g", [ids], [out])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_fixed_sequence_axis_is_unsupported(tmp_path):
    model = torch.nn.Linear(2, 2)
    require_dynamic_sequence(_identity_graph(tmp_path / "dynamic.onnx", "seq"), model)
    with pytest.raises(Unsupported, match="fixed the sequence length at 16 tokens"):
        require_dynamic_sequence(_identity_graph(tmp_path / "fixed.onnx", 16), model)


@pytest.mark.parametrize("arch", ["mamba", "jamba"])
def test_mamba_layouts_are_unsupported_before_tracing(arch, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_export_to", lambda *a: pytest.fail("traced a known-unsupported layout"))
    with pytest.raises(Unsupported, match="^unsupported: ONNX export: .*scan"):
        export_model(tiny_model(arch), tmp_path)
    require_exportable(tiny_model("llama"))  # a dense transformer has no blocker


def test_exporter_failure_reads_as_unsupported(tmp_path, monkeypatch):
    """Mixtral's fused experts under their own grouped-matmul operator have no ONNX translation: the exporter's
    cause becomes the reason (the export itself switches them to an exportable implementation)."""
    monkeypatch.setattr(export_module, "exportable_experts", lambda model: contextlib.nullcontext())
    with pytest.raises(Unsupported, match="^unsupported: ONNX export of MixtralForCausalLM: .*grouped_mm"):
        export_model(tiny_model("mixtral"), tmp_path)


def test_split_experts_dense_path_is_the_same_function():
    torch.manual_seed(0)
    experts = SplitExperts.from_fused(tiny_model("mixtral").model.layers[0].mlp.experts)
    hidden = torch.randn(10, 64)
    index = torch.stack([torch.randperm(4)[:2] for _ in range(10)])
    weights = torch.rand(10, 2)
    torch.testing.assert_close(experts.dense(hidden, index, weights), experts(hidden, index, weights))
