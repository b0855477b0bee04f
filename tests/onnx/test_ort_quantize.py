"""`kind: onnx` on the demo model: the fp32 export and ORT's int8 / int4 quantization, measured through ORT."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import full_logits, mean_nll

from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.spec.modification import OnnxSpec
from tests.conftest import assert_bit_identical, state_snapshot

QUANTIZED = [
    OnnxSpec(quantize="dynamic-int8"),
    OnnxSpec(quantize="int4-weight", block_size=32),
    OnnxSpec(quantize="int4-weight", block_size=128),
]


def _apply(patient, out_dir, spec: OnnxSpec):
    ctx = ApplyContext(patient=patient, undo=UndoLog(), calibration=lambda spec: None, out_dir=out_dir)
    return apply_modification(spec, ctx), ctx


def test_export_checkup_puts_an_ort_backend_in_state(demo_patient, demo_export, demo_windows, demo_reference,
                                                     onnx_out):
    snapshot = state_snapshot(demo_patient.model)
    applied, ctx = _apply(demo_patient, onnx_out, OnnxSpec())
    backend = ctx.state["backend"]
    assert backend.name == "onnx" and backend.provider == "CPUExecutionProvider"
    assert len(ctx.undo) == 0  # the torch weights are never touched
    assert_bit_identical(demo_patient.model, snapshot)
    r = applied.realized
    assert r["quantize"] == "none" and r["provider"] == backend.provider and r["export_cached"]
    assert r["size_ratio"] == 1.0 and r["file_size_mb"] == pytest.approx(backend.file_size_bytes / 1e6)
    assert r["export_seconds"] == pytest.approx(demo_export.seconds, abs=1e-3)
    assert (full_logits(backend, demo_windows) - demo_reference).abs().max().item() < 1e-4


@pytest.mark.parametrize("spec", QUANTIZED, ids=lambda s: f"{s.quantize}-b{s.block_size}")
def test_ort_quantization_is_close_but_not_equal(demo_patient, demo_export, demo_windows, demo_reference, onnx_out,
                                                 spec):
    applied, ctx = _apply(demo_patient, onnx_out, spec)
    logits = full_logits(ctx.state["backend"], demo_windows)
    assert torch.isfinite(logits).all()
    assert (logits - demo_reference).abs().max().item() > 1e-3  # the weights really changed
    base, quantized = mean_nll(demo_reference, demo_windows), mean_nll(logits, demo_windows)
    assert abs(quantized / base - 1) < 0.25  # damaged, not destroyed: the model still predicts
    top1 = (logits.argmax(-1) == demo_reference.argmax(-1)).float().mean().item()
    assert top1 > 0.6
    r = applied.realized
    assert r["quantize"] == spec.quantize and 0 < r["size_ratio"] < 0.6
    # every block linear (5 layers x 7) is quantized
    assert r["quantized_matmuls"] == 5 * 7
    if spec.quantize == "int4-weight":
        # MatMulNBits needs a constant weight; the tied output layer reads a transposed embedding and stays fp32
        assert r["fp32_weight_matmuls"] == 1 and "tied" in r["note"]
    else:
        # dynamic int8 stores the shared embedding in int8 and dequantizes it for the output layer
        assert r["fp32_weight_matmuls"] == 0


def test_int8_stores_about_eight_bits_per_weight(demo_patient, onnx_out):
    applied, _ = _apply(demo_patient, onnx_out, OnnxSpec(quantize="dynamic-int8"))
    assert 8 <= applied.realized["effective_bits"] < 8.1


@pytest.mark.parametrize("block", [32, 128])
def test_int4_padding_of_narrow_inputs_is_counted(demo_patient, onnx_out, block):
    applied, _ = _apply(demo_patient, onnx_out, OnnxSpec(quantize="int4-weight", block_size=block))
    r = applied.realized
    facts = demo_patient.facts
    # inputs of width 64 (hidden) and 172 (MLP) against the block: the ones not divisible get zero-padded
    widths = [facts.hidden] * 6 + [facts.intermediate]  # q k v o gate up | down
    expected_padded = facts.layers * sum(1 for k in widths if k % block)
    assert r["padded_weights"] == expected_padded and r["block_size"] == block
    stored = facts.layers * sum(
        -(-k // block) * block * n for k, n in zip(widths, _out_widths(facts), strict=True)
    )
    quantized = facts.layers * sum(k * n for k, n in zip(widths, _out_widths(facts), strict=True))
    # per stored (padded) weight: 4 bits, plus a float32 scale and a (packed) zero point per block
    padding = stored / quantized
    assert 4 * padding <= r["effective_bits"] <= (4 + (32 + 8) / block) * padding


def _out_widths(facts) -> list[int]:
    head_dim = facts.hidden // facts.heads
    kv = facts.kv_heads * head_dim
    return [facts.hidden, kv, kv, facts.hidden, facts.intermediate, facts.intermediate, facts.hidden]


def test_quantized_variants_are_cached(demo_patient, onnx_out):
    first, _ = _apply(demo_patient, onnx_out, OnnxSpec(quantize="int4-weight", block_size=32))
    second, _ = _apply(demo_patient, onnx_out, OnnxSpec(quantize="int4-weight", block_size=32))
    assert first.realized["onnx_file"] == second.realized["onnx_file"]
    assert second.realized["quantize_seconds"] == first.realized["quantize_seconds"]


def test_missing_onnxruntime_is_a_modification_error(demo_patient, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModificationError, match="pip install onnxruntime"):
        _apply(demo_patient, tmp_path, OnnxSpec(quantize="dynamic-int8"))
    assert not (tmp_path / "onnx-cache").exists()  # it fails before exporting anything


def test_quantizer_failure_is_a_modification_error(tmp_path, monkeypatch):
    import onnxruntime.quantization as ortq

    from doctor.onnx.export import Exported
    from doctor.onnx.variants import quantized_variant

    def broken(*args, **kwargs):
        raise ValueError("unsupported graph\nmore detail")

    monkeypatch.setattr(ortq, "quantize_dynamic", broken)
    (tmp_path / "export").mkdir()
    exported = Exported(path=tmp_path / "export" / "model.onnx", key="k", seconds=0.0, cached=True)
    with pytest.raises(ModificationError, match="dynamic-int8 quantization failed: ValueError: unsupported graph$"):
        quantized_variant(exported, OnnxSpec(quantize="dynamic-int8"))
    assert list((tmp_path / "export").iterdir()) == []  # no half-written variant left behind
