"""`kind: artifact`: a ready-made compressed model file or folder judged against the original it was made from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from doctor.modifications.registry import Compression, ModificationMethod, Unsupported
from doctor.resources import DEMO_CANDIDATE
from doctor.spec.base import Spec

# Legacy GGUF types are round-to-nearest on blocks of 32 (Q*_0 symmetric, Q*_1 with a minimum); GPTQ and AWQ
# checkpoints name their method. k-quants and i-quants search their scales and have no published counterpart in
# the predictor's table.
_METHOD_BY_FORMAT = {"gptq": "gptq", "awq": "awq"}
_RTN_GGUF = ("Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1")


class ArtifactSpec(Spec):
    """A compressed artifact of the patient (GGUF, GPTQ/AWQ packed checkpoint, compressed-tensors, safetensors)."""

    kind: Literal["artifact"] = "artifact"
    path: str = Field(description="a .gguf file, or a folder with config.json and *.safetensors (or one .gguf)")
    format: Literal["auto", "gguf", "gptq", "awq", "compressed-tensors", "safetensors"] = Field(
        "auto", description="auto: from the file suffix or config.json's quantization_config.quant_method"
    )


def summary(mod: dict[str, Any]) -> str:
    fmt = mod.get("format", "auto")
    return f"artifact {Path(str(mod.get('path', '?'))).name}" + ("" if fmt == "auto" else f" ({fmt})")


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """1 - bits/16 as for quantization, with the bits the file declares for its quantized tensors (or, when it
    declares none, its bytes per weight); unknown until the file was read."""
    bits = realized.get("bits") or realized.get("effective_bits")
    return max(0.0, 1.0 - float(bits) / 16.0) if isinstance(bits, (int, float)) else None


def case_fields(mod: dict, realized: dict, layers: int) -> dict:
    fmt = realized.get("format")
    bits = realized.get("bits")
    if fmt is None or bits is None:
        raise Unsupported("the artifact's format and bits are known only once it was read")
    if fmt == "gguf":
        if realized.get("dominant_type") not in _RTN_GGUF:
            raise Unsupported(f"no published data for GGUF type {realized.get('dominant_type')}")
        method = "rtn"
    elif fmt in _METHOD_BY_FORMAT:
        method = _METHOD_BY_FORMAT[fmt]
    else:
        raise Unsupported(f"no method is known for a {fmt} artifact")
    return {"kind": "quantization", "method": method, "bits": float(bits), "group_size": realized.get("group_size")}


METHOD = ModificationMethod(
    kind="artifact",
    spec=ArtifactSpec,
    apply="doctor.modifications.artifact:apply",
    summary=summary,
    compression=Compression("bits", level),
    predictor=case_fields,
    examples=({"kind": "artifact", "path": str(DEMO_CANDIDATE)},),
    known_when_applied=True,
    rank=70,
    description=ArtifactSpec.__doc__,
)
