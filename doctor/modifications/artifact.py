"""`kind: artifact`: a ready-made compressed model (GGUF quant, GPTQ/AWQ packed checkpoint, compressed-tensors or
plain safetensors) put in place of the patient's weights, so it is measured with the same windows and KL cache as
every other checkup and restored bit for bit afterwards.

What the file is gets recorded, not assumed: its format, its bytes per parameter, the storage types of its tensors,
the share of the original's weights it replaced and the share it changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from doctor.artifacts.candidate import load_candidate
from doctor.errors import ModificationError
from doctor.history import detect_history
from doctor.modifications.base import Applied, ApplyContext


def apply(spec, ctx: ApplyContext) -> Applied:
    model = ctx.patient.model
    ctx.progress(f"reading candidate {spec.path}")
    candidate = load_candidate(Path(spec.path), spec.format, ctx.patient)
    params = dict(model.named_parameters())
    missing = [name for name in params if name not in candidate.weights]
    if missing:
        raise ModificationError(
            f"{spec.path}: the candidate lacks {len(missing)} of the original's {len(params)} parameters "
            f"(first: {missing[0]}); it cannot be judged as a whole model"
        )
    total = changed = 0
    with torch.no_grad():
        for name, param in params.items():
            new = candidate.weights[name].to(device=param.device, dtype=param.dtype)
            total += param.numel()
            if not torch.equal(new, param):
                changed += param.numel()
                ctx.undo.save_tensor(param)
                param.copy_(new)
    realized = {
        "format": candidate.format,
        "file_bytes": candidate.file_bytes,
        "effective_bits": candidate.file_bytes * 8 / total,  # measured from the file: bytes per parameter
        "weights_replaced": total,
        "coverage": 1.0,
        "changed_share": changed / total,
        **_storage(candidate),
        "sha256": candidate.facts.get("sha256"),
        "grid": _grid(model),
    }
    return Applied(realized=realized)


def _storage(candidate) -> dict:
    """Nominal bits and group size of the quantized tensors, as the file declares them."""
    facts = candidate.facts
    if "tensor_types" in facts:
        types = facts["tensor_types"]
        quantized = {t: share for t, share in types.items() if nominal_bits(t) is not None and nominal_bits(t) < 16}
        dominant = max(quantized, key=quantized.get) if quantized else None
        return {"tensor_types": types, "dominant_type": dominant,
                "bits": nominal_bits(dominant) if dominant else None, "group_size": gguf_block(dominant)}
    qconfig = facts.get("quantization_config", {})
    group = qconfig.get("group_size") or qconfig.get("q_group_size")
    return {"quantization_config": qconfig, "bits": qconfig.get("bits"),
            "group_size": int(group) if isinstance(group, (int, float)) and group > 0 else None}


def nominal_bits(ggml_type: str | None) -> float | None:
    """Bits per code of a GGML type name (Q4_K -> 4, IQ3_S -> 3, F16 -> 16); None when unknown."""
    if ggml_type is None:
        return None
    if ggml_type in ("F32", "F64"):
        return 32.0
    if ggml_type in ("F16", "BF16"):
        return 16.0
    match = re.fullmatch(r"I?Q(\d)_.*|TQ(\d)_.*|MXFP(\d)|NVFP(\d)", ggml_type)
    if match is None:
        return None
    return float(next(g for g in match.groups() if g))


def gguf_block(ggml_type: str | None) -> int | None:
    """Weights per scale of a GGML type (32 for Q4_0/Q8_0, 256 per super-block for k-quants)."""
    if ggml_type is None:
        return None
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return int(block)


def _grid(model: torch.nn.Module) -> dict:
    """The grid the weights actually lie on (bits, group size, scheme; levels per group), whatever the file says."""
    history = detect_history(model)
    return {"found": history.dominant, "on_grid_linears": history.on_grid, "linears": history.linears,
            "levels_per_group": history.levels_per_group}
