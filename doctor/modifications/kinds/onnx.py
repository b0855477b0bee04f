"""`kind: onnx`: export to ONNX and evaluate under ONNX Runtime, optionally with ORT's own quantization."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.modifications.registry import NO_COMPRESSION, ModificationMethod
from doctor.spec.base import Spec


class OnnxSpec(Spec):
    """Export to ONNX and evaluate under ONNX Runtime, optionally with ORT's own quantization."""

    kind: Literal["onnx"] = "onnx"
    quantize: Literal["none", "dynamic-int8", "int4-weight"] = "none"
    block_size: int = Field(32, ge=16, description="int4-weight: weights per quantization block (power of 2)")
    opset: int = Field(18, ge=14)

    @model_validator(mode="after")
    def _check_block(self) -> OnnxSpec:
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        return self


def summary(mod: dict[str, Any]) -> str:
    quant = mod.get("quantize", "none")
    text = "onnx runtime" if quant == "none" else f"onnx runtime {quant}"
    return text + (f" b{mod['block_size']}" if quant == "int4-weight" and mod.get("block_size") else "")


METHOD = ModificationMethod(
    kind="onnx",
    spec=OnnxSpec,
    apply="doctor.onnx.variants:apply",
    summary=summary,
    compression=NO_COMPRESSION,
    predictor=None,  # ORT's own quantizers are not in the published-results table: no expectation
    examples=({"kind": "onnx"},),
    rank=60,
    slow=True,  # an ONNX export of even the demo model takes about a minute on two cores
    description=OnnxSpec.__doc__,
)
