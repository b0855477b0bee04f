"""Whether a model can be exported to an ONNX graph that takes any sequence length, and how a failure reads.

- Up front: a block whose architecture adapter names a blocker (a Mamba mixer's scan) is "unsupported" before
  any tracing.
- Mixtures of experts: transformers 5 runs fused experts through a custom grouped-matmul operator that has no
  ONNX translation, so the export runs them with transformers' gather-based `batched_mm` implementation (the
  same function) and puts the model's own implementation back afterwards.
- After the export: a graph whose sequence axis came out fixed (the exporter specialised it) cannot evaluate
  other lengths, so it is "unsupported" rather than a graph that fails at the first other window.
- A tracing or conversion failure (the exporter cannot express the model) is "unsupported" with the exporter's
  cause; anything else stays a plain failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from doctor.architectures import Unsupported, architecture_of

EXPORT_EXPERTS = "batched_mm"
# where the exceptions of a model the exporter cannot express come from (tracing, shape guards, conversion)
_EXPORTER_MODULES = ("torch.onnx", "torch._dynamo", "torch.export", "torch._export", "torch.fx", "onnxscript",
                     "torch._subclasses")


def blocker(model: nn.Module) -> str | None:
    """The first reason a block of `model` cannot be exported, decided from its layout alone."""
    from doctor.compress.adapters import decoder_layers

    try:
        blocks = decoder_layers(model)
    except Exception:  # a model without recognisable decoder layers: let the exporter decide
        return None
    for block in blocks:
        reason = architecture_of(block).onnx_blocker(block)
        if reason:
            return reason
    return None


def require_exportable(model: nn.Module) -> None:
    reason = blocker(model)
    if reason:
        raise Unsupported(reason)


@contextlib.contextmanager
def exportable_experts(model: nn.Module) -> Iterator[None]:
    """Run fused experts with an implementation the exporter can translate, for the export's duration."""
    can_set = getattr(model, "_can_set_experts_implementation", None)
    config = getattr(model, "config", None)
    if not callable(can_set) or not can_set() or getattr(config, "_experts_implementation", None) is None:
        yield
        return
    original = model.get_experts_implementation()
    model.set_experts_implementation(EXPORT_EXPERTS)
    try:
        yield
    finally:
        model.set_experts_implementation(original)


def require_dynamic_sequence(path: Path, model: nn.Module) -> None:
    """Raise Unsupported when the exported graph's input_ids has a fixed sequence length."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) >= 2 and not dims[1].dim_param:
        raise Unsupported(f"ONNX export of {type(model).__name__}: the exporter fixed the sequence length at "
                          f"{dims[1].dim_value} tokens, so the graph cannot evaluate other lengths")


def is_exporter_limit(exc: BaseException) -> bool:
    """Whether an export failure comes from tracing or conversion (the model is beyond the exporter)."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__module__.startswith(_EXPORTER_MODULES):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
