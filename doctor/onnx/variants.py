"""`kind: onnx`: export the current model and evaluate it under ONNX Runtime, optionally ORT-quantized.

- `none`: the fp32 export alone, to measure export fidelity.
- `dynamic-int8`: `onnxruntime.quantization.quantize_dynamic` with QInt8 weights (MatMul -> MatMulInteger,
  activations quantized on the fly per tensor).
- `int4-weight`: blockwise 4-bit weights (MatMul -> MatMulNBits, asymmetric, one scale and zero point per
  `block_size` input rows, as in ORT's `matmul_nbits_quantizer`). A weight whose input dimension K is not a
  multiple of the block is zero-padded to one by ORT; the padding is stored, so it is counted and reported.

The torch weights are never touched: the result is an ORT session in `ctx.state["backend"]`, which the runner
measures through and drops on restore. Quantized variants are cached next to the fp32 export they came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext
from doctor.onnx.backend import OrtBackend, require_onnxruntime
from doctor.onnx.export import MODEL_FILE, Exported, ExportSettings, export_model, files_size_bytes
from doctor.spec.modification import OnnxSpec

log = logging.getLogger(__name__)

VARIANT_INFO = "variant.json"
_QUANTIZED_OPS = ("MatMulInteger", "MatMulNBits")
_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def apply(spec: OnnxSpec, ctx: ApplyContext) -> Applied:
    require_onnxruntime()
    ctx.progress("exporting to ONNX")
    exported = export_model(ctx.patient.model, ctx.out_dir, ExportSettings(opset=spec.opset))
    fp32_bytes = files_size_bytes(exported.path)
    path, quantize_seconds = exported.path, 0.0
    if spec.quantize != "none":
        ctx.progress(f"ONNX Runtime quantization: {spec.quantize}")
        path, quantize_seconds = quantized_variant(exported, spec)
    backend = OrtBackend(path, device=ctx.patient.device)
    ctx.state["backend"] = backend
    size = backend.file_size_bytes
    realized = {
        "backend": "onnx",
        "provider": backend.provider,
        "quantize": spec.quantize,
        "opset": spec.opset,
        "file_size_mb": size / 1e6,
        "fp32_file_size_mb": fp32_bytes / 1e6,
        "size_ratio": size / fp32_bytes,
        "export_seconds": round(exported.seconds, 3),
        "export_cached": exported.cached,
        "quantize_seconds": round(quantize_seconds, 3),
        "onnx_file": _relative(path, ctx.out_dir),
    }
    if spec.quantize != "none":
        realized.update(graph_facts(path, spec))
    return Applied(realized=realized)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def variant_name(spec: OnnxSpec) -> str:
    return "dynamic-int8" if spec.quantize == "dynamic-int8" else f"int4-weight-b{spec.block_size}"


def quantized_variant(exported: Exported, spec: OnnxSpec) -> tuple[Path, float]:
    """The quantized model (cached under the export's folder) and the seconds quantization took."""
    entry = exported.path.parent / variant_name(spec)
    if (entry / VARIANT_INFO).is_file():
        return entry / MODEL_FILE, float(json.loads((entry / VARIANT_INFO).read_text())["seconds"])
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        start = time.perf_counter()
        try:
            _quantize(exported.path, tmp / MODEL_FILE, spec)
        except Exception as exc:  # ORT's quantizers raise assorted types; a failed checkup, not a crash
            raise ModificationError(f"ONNX Runtime {spec.quantize} quantization failed: {_first_line(exc)}") from exc
        seconds = time.perf_counter() - start
        (tmp / VARIANT_INFO).write_text(json.dumps({"seconds": round(seconds, 3), "spec": spec.model_dump()}))
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / VARIANT_INFO).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry / MODEL_FILE, seconds


def _quantize(source: Path, target: Path, spec: OnnxSpec) -> None:
    if spec.quantize == "dynamic-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet():
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, use_external_data_format=True)
        return
    import onnx

    quantizer_cls = _nbits_quantizer()
    with _quiet():
        quantizer = quantizer_cls(onnx.load(str(source)), bits=4, block_size=spec.block_size, is_symmetric=False)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=True)


def _nbits_quantizer():
    """ORT's MatMulNBitsQuantizer; its module calls logging.basicConfig(INFO) on import, which is undone."""
    import logging as _logging

    root = _logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return MatMulNBitsQuantizer


@contextlib.contextmanager
def _quiet():
    """ORT's quantizers log every node, partly through the root logger; silence all but errors meanwhile."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def graph_facts(path: Path, spec: OnnxSpec) -> dict:
    """Realized quantization, read back from the graph: what was quantized, at how many stored bits."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    sizes = {init.name: numpy_helper.to_array(init).nbytes for init in graph.initializer}
    quantized = [n for n in graph.node if n.op_type in _QUANTIZED_OPS]
    stored = original = 0
    padded = []
    for node in quantized:
        stored += sum(sizes.get(name, 0) for name in node.input[1:])  # weights, scales, zero points
        k, n = _weight_shape(node, graph)
        original += k * n
        block = _attribute(node, "block_size")
        if block and k % block:
            padded.append(f"{k}->{-(-k // block) * block}")
    left_fp32 = _fp32_weight_matmuls(graph)
    facts = {
        "quantized_matmuls": len(quantized),
        "fp32_weight_matmuls": len(left_fp32),
        "effective_bits": 8 * stored / original if original else None,
        "quantized_weights": original,
    }
    notes = []
    if left_fp32:
        notes.append(
            f"{len(left_fp32)} weight MatMul(s) stay fp32: the weight reaches them through a Transpose the "
            "exporter keeps (a weight shared with the embedding, e.g. a tied output layer)"
        )
    if spec.quantize == "int4-weight":
        facts.update({"block_size": spec.block_size, "symmetric": False, "padded_weights": len(padded)})
        if padded:
            notes.append(
                f"{len(padded)} weights have an input size not a multiple of block {spec.block_size}; "
                f"ORT zero-pads them ({', '.join(sorted(set(padded)))}), and the padding is stored"
            )
    if notes:
        facts["note"] = "; ".join(notes)
    return facts


def _fp32_weight_matmuls(graph) -> list[str]:
    """MatMul/Gemm nodes whose B is a float weight, directly or through a Transpose the exporter kept."""
    floats = {i.name for i in graph.initializer if i.data_type in _FLOAT_TYPES}
    transposed = {n.output[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in floats}
    return [
        n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and (n.input[1] in floats | transposed)
    ]


def _weight_shape(node, graph) -> tuple[int, int]:
    """(K, N) of the original weight: MatMulNBits carries them as attributes; MatMulInteger's B is (K, N)."""
    if node.op_type == "MatMulNBits":
        return int(_attribute(node, "K")), int(_attribute(node, "N"))
    for init in graph.initializer:
        if init.name == node.input[1]:
            return int(init.dims[0]), int(init.dims[1])
    return 0, 0


def _attribute(node, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return attr.i
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
