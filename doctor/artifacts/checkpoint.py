"""Reading a candidate checkpoint folder into float weights keyed like the original's parameters.

A folder holds safetensors shards and a `config.json`; its `quantization_config.quant_method` names the packed
layout (`gptq`, `awq`, `compressed-tensors`), and its absence means plain (fake-quantized) weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from doctor.artifacts import awq_format, gptq_format
from doctor.errors import ModelLoadError


def read_quantization_config(folder: Path) -> dict:
    """The folder's quantization_config (config.json, or a GPTQ-style quantize_config.json); {} if none."""
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    found = dict(config.get("quantization_config") or {})
    legacy = folder / "quantize_config.json"
    if not found and legacy.is_file():
        found = {"quant_method": "gptq", **_read_json(legacy)}
    return found


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def safetensor_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no *.safetensors weight files")
    return files


def iter_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every shard, by name."""
    from safetensors import SafetensorError, safe_open

    for path in safetensor_files(folder):
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
                    yield name, handle.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(f"{path}: unreadable safetensors file ({exc})") from None


def read_folder(folder: Path, method: str, qconfig: dict) -> dict[str, torch.Tensor]:
    """Float weights by parameter name: packed linears dequantized, everything else as stored."""
    raw = dict(iter_tensors(folder))
    if method == "plain":
        return raw
    suffixes = gptq_format.SUFFIXES if method == "gptq" else awq_format.SUFFIXES
    prefixes = sorted({name.rsplit(".", 1)[0] for name in raw if name.endswith(".qweight")})
    if not prefixes:
        raise ModelLoadError(f"{folder}: quant_method '{method}' but no packed '*.qweight' tensors")
    weights = {name: t for name, t in raw.items() if not any(name == f"{p}.{s}" for p in prefixes for s in suffixes)}
    bits = int(qconfig.get("bits", 4))
    group_size = int(qconfig.get("group_size") or qconfig.get("q_group_size") or -1)
    for prefix in prefixes:
        missing = [s for s in suffixes if f"{prefix}.{s}" not in raw and s != "g_idx"]
        if missing:
            raise ModelLoadError(f"{folder}: {prefix} lacks {', '.join(missing)}")
        weights[f"{prefix}.weight"] = _dequantize(raw, prefix, method, bits, group_size, qconfig)
    return weights


def _dequantize(raw: dict, prefix: str, method: str, bits: int, group_size: int, qconfig: dict) -> torch.Tensor:
    if method == "awq":
        if bits != awq_format.BITS:
            raise ModelLoadError(f"AWQ checkpoint with {bits} bits: only the 4-bit GEMM layout is supported")
        packed = awq_format.PackedLinear(raw[f"{prefix}.qweight"], raw[f"{prefix}.qzeros"], raw[f"{prefix}.scales"])
        return awq_format.dequantize(packed, group_size if group_size > 0 else packed.qweight.shape[0])
    qweight = raw[f"{prefix}.qweight"]
    in_features = qweight.shape[0] * 32 // bits
    g_idx = raw.get(f"{prefix}.g_idx")
    if g_idx is None:  # checkpoints without act-order may omit it: contiguous groups
        size = group_size if group_size > 0 else in_features
        g_idx = torch.arange(in_features, dtype=torch.int32) // size
    packed = gptq_format.PackedLinear(qweight, raw[f"{prefix}.qzeros"], raw[f"{prefix}.scales"], g_idx)
    v2 = str(qconfig.get("checkpoint_format", "gptq")).lower() == "gptq_v2"
    return gptq_format.dequantize(packed, bits, v2=v2)
