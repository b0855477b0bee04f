"""AWQ checkpoints in AutoAWQ's GEMM layout (4-bit, the format llm-awq and AutoAWQ publish), unpacked on the CPU.

Per quantized linear `P` (out x in features, groups of `group_size` input rows):
- `P.qweight` int32 (in, out / 8): eight 4-bit codes per word along the output dimension, interleaved in the
  order 0, 2, 4, 6, 1, 3, 5, 7;
- `P.qzeros`  int32 (in / group_size, out / 8): zero points, packed the same way;
- `P.scales`  float16 (in / group_size, out).
The weight is W[o, i] = scales[i // g, o] * (q[i, o] - zero[i // g, o]); unlike GPTQ v1, zeros are stored as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from doctor.artifacts.packing import awq_deinterleave, awq_interleave, pack_columns, unpack_columns

SUFFIXES = ("qweight", "qzeros", "scales")
BITS = 4


@dataclass(frozen=True)
class PackedLinear:
    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor


def dequantize(packed: PackedLinear, group_size: int) -> torch.Tensor:
    """The (out, in) float32 weight of one packed linear."""
    in_features, out_features = packed.qweight.shape[0], packed.scales.shape[1]
    codes = awq_deinterleave(unpack_columns(packed.qweight, BITS, -(-out_features // 8) * 8), out_features)  # (in, out)
    zeros = awq_deinterleave(unpack_columns(packed.qzeros, BITS, -(-out_features // 8) * 8), out_features)  # (groups, out)
    if packed.scales.shape[0] * group_size < in_features:
        raise ValueError(f"{packed.scales.shape[0]} groups of {group_size} do not cover {in_features} inputs")
    groups = torch.arange(in_features) // group_size
    w = (codes - zeros[groups]).to(torch.float32) * packed.scales[groups].to(torch.float32)
    return w.t().contiguous()


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> PackedLinear:
    """Pack (out, in) 4-bit codes with (groups, out) scales and integer zeros."""
    return PackedLinear(
        qweight=pack_columns(awq_interleave(codes.t().contiguous()), BITS),
        qzeros=pack_columns(awq_interleave(zeros.to(torch.int64)), BITS),
        scales=scales.to(torch.float16),
    )
