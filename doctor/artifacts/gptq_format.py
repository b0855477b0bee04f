"""GPTQ checkpoints in the packed layout AutoGPTQ and GPTQModel write, unpacked without CUDA kernels.

Per quantized linear `P` (out x in features, `bits` bits, groups of `group_size` input columns):
- `P.qweight` int32 (in * bits / 32, out): codes packed along the input dimension;
- `P.qzeros`  int32 (groups, out * bits / 32): zero points packed along the output dimension; format "gptq"
  (v1) stores zero - 1, format "gptq_v2" the zero itself;
- `P.scales`  float16 (groups, out);
- `P.g_idx`   int32 (in,): the group of each input column (act-order checkpoints permute it).
The weight is W[o, i] = scales[g_idx[i], o] * (q[i, o] - zero[g_idx[i], o]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from doctor.artifacts.packing import pack_columns, pack_rows, unpack_columns, unpack_rows

SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


@dataclass(frozen=True)
class PackedLinear:
    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    g_idx: torch.Tensor


def dequantize(packed: PackedLinear, bits: int, v2: bool = False) -> torch.Tensor:
    """The (out, in) float32 weight of one packed linear."""
    out_features = packed.scales.shape[1]
    in_features = packed.g_idx.shape[0]
    codes = unpack_rows(packed.qweight, bits, in_features)  # (in, out)
    zeros = unpack_columns(packed.qzeros, bits, out_features) + (0 if v2 else 1)  # (groups, out)
    groups = packed.g_idx.to(torch.int64)
    if int(groups.min()) < 0 or int(groups.max()) >= packed.scales.shape[0]:
        raise ValueError(f"g_idx points outside the {packed.scales.shape[0]} groups of scales")
    w = (codes - zeros[groups]).to(torch.float32) * packed.scales[groups].to(torch.float32)
    return w.t().contiguous()


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor, bits: int,
         v2: bool = False) -> PackedLinear:
    """Pack (out, in) integer codes with per-group (groups, out) scales and integer zeros."""
    stored_zeros = zeros.to(torch.int64) - (0 if v2 else 1)
    if not v2 and int(stored_zeros.min()) < 0:
        raise ValueError("format 'gptq' stores zero - 1 and cannot hold a zero point of 0; use gptq_v2")
    return PackedLinear(
        qweight=pack_rows(codes.t().contiguous(), bits),
        qzeros=pack_columns(stored_zeros, bits),
        scales=scales.to(torch.float16),
        g_idx=g_idx.to(torch.int32),
    )
