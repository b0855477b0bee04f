"""GPT-NeoX / Pythia blocks: one fused `query_key_value` interleaved per head (q, k, v of head 0, then head 1...).

The value rows are interleaved, so `attention.dense` has no exact AWQ producer and is not scaled; the MLP input
comes from `post_attention_layernorm` with or without the parallel residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from doctor.architectures.base import Architecture, Attention, Mlp, ScaleGroup, has, head_major, linear_weight


def interleaved_qkv(heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row map of a projection laid out per head as [q, k, v] blocks of `head_dim` rows (multi-head)."""
    rows = torch.arange(3 * heads * head_dim)
    head, part = rows // (3 * head_dim), (rows % (3 * head_dim)) // head_dim
    return torch.where(part == 0, head, -1), torch.where(part > 0, head, -1)


@dataclass
class GptNeox(Architecture):
    name: str = "gpt_neox"
    output_projections: tuple[str, ...] = ("attention.dense", "mlp.dense_4h_to_h")

    def matches(self, block: nn.Module) -> bool:
        return has(block, "attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [["attention.query_key_value"], ["attention.dense"], ["mlp.dense_h_to_4h"], ["mlp.dense_4h_to_h"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        return {
            ("attention.query_key_value",): ScaleGroup("input_layernorm", "attention"),
            ("mlp.dense_h_to_4h",): ScaleGroup("post_attention_layernorm", "mlp"),
        }

    def attention(self, block: nn.Module) -> Attention:
        attn = block.attention
        hd = attn.head_size
        heads = linear_weight(attn.dense).shape[1] // hd
        return Attention(attn, {"query_key_value": interleaved_qkv(heads, hd)}, "dense", hd, heads, heads)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        width = linear_weight(block.mlp.dense_h_to_4h).shape[0]
        return [Mlp(block.mlp, {"dense_h_to_4h": head_major(width, 1)}, "dense_4h_to_h", width, "intermediate_size")]
