"""Phi-3 blocks: one fused `qkv_proj` (all q rows, then k, then v) and one fused `gate_up_proj` (gate, then up)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from doctor.architectures.base import (
    Architecture,
    Attention,
    Mlp,
    ScaleGroup,
    has,
    head_major,
    linear_weight,
    stacked_qkv,
)


@dataclass
class Phi3(Architecture):
    name: str = "phi3"
    output_projections: tuple[str, ...] = ("self_attn.o_proj", "mlp.down_proj")

    def matches(self, block: nn.Module) -> bool:
        return has(block, "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [["self_attn.qkv_proj"], ["self_attn.o_proj"], ["mlp.gate_up_proj"], ["mlp.down_proj"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        a = self.attention(block)
        return {
            ("self_attn.qkv_proj",): ScaleGroup("input_layernorm", "self_attn"),
            ("self_attn.o_proj",): ScaleGroup("self_attn.qkv_proj", "self_attn.o_proj", shared=a.kv_heads * a.head_dim),
            ("mlp.gate_up_proj",): ScaleGroup("post_attention_layernorm", "mlp"),
            # act(gate) * up / s: dividing the up rows (the last half) is exact
            ("mlp.down_proj",): ScaleGroup("mlp.gate_up_proj", "mlp.down_proj", shared=self._width(block)),
        }

    def attention(self, block: nn.Module) -> Attention:
        attn = block.self_attn
        hd = attn.head_dim
        heads = linear_weight(attn.o_proj).shape[1] // hd
        kv = (linear_weight(attn.qkv_proj).shape[0] // hd - heads) // 2
        return Attention(attn, {"qkv_proj": stacked_qkv(heads, kv, hd)}, "o_proj", hd, heads, kv)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        width = self._width(block)
        rows = head_major(width, 1)
        return [Mlp(block.mlp, {"gate_up_proj": torch.cat([rows, rows])}, "down_proj", width, "intermediate_size")]

    @staticmethod
    def _width(block: nn.Module) -> int:
        return linear_weight(block.mlp.down_proj).shape[1]
