"""Falcon blocks: a fused `query_key_value` in one of three layouts, parallel attention and MLP.

Layouts (transformers' FalconAttention._split_heads): new decoder architecture, per KV group [q x n, k, v];
multi-query, all q rows then one k and one v head; otherwise multi-head interleaved per head [q, k, v].
With a single `input_layernorm` feeding both branches, AWQ scales qkv and the MLP input together.
"""

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
from doctor.architectures.neox import interleaved_qkv

QKV, DENSE, UP, DOWN = "self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"


def grouped_qkv(heads: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row map of [q x n_rep, k, v] per KV group."""
    n_rep = heads // kv_heads
    rows = torch.arange(kv_heads * (n_rep + 2) * head_dim)
    group, slot = rows // ((n_rep + 2) * head_dim), (rows // head_dim) % (n_rep + 2)
    return torch.where(slot < n_rep, group * n_rep + slot, -1), torch.where(slot >= n_rep, group, -1)


@dataclass
class Falcon(Architecture):
    name: str = "falcon"
    output_projections: tuple[str, ...] = (DENSE, DOWN)

    def matches(self, block: nn.Module) -> bool:
        return has(block, QKV, DENSE, UP, DOWN)

    def _parallel_single_norm(self, block: nn.Module) -> bool:
        return has(block, "input_layernorm") and not has(block, "post_attention_layernorm", "ln_mlp")

    def groups(self, block: nn.Module) -> list[list[str]]:
        if self._parallel_single_norm(block):
            return [[QKV, UP], [DENSE], [DOWN]]
        return [[QKV], [DENSE], [UP], [DOWN]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        a = self.attention(block)
        groups = {}
        if self._parallel_single_norm(block):
            groups[(QKV, UP)] = ScaleGroup("input_layernorm", "")
        if a.kv_heads < a.heads and not block.self_attention.new_decoder_architecture:
            groups[(DENSE,)] = ScaleGroup(QKV, DENSE, shared=a.kv_heads * a.head_dim)  # multi-query: v rows last
        return groups

    def attention(self, block: nn.Module) -> Attention:
        attn = block.self_attention
        hd, heads = attn.head_dim, attn.num_heads
        kv = (linear_weight(attn.query_key_value).shape[0] // hd - heads) // 2
        if attn.new_decoder_architecture:
            rows = grouped_qkv(heads, kv, hd)
        elif attn.multi_query:
            rows = stacked_qkv(heads, kv, hd)
        else:
            rows = interleaved_qkv(heads, hd)
        return Attention(attn, {"query_key_value": rows}, "dense", hd, heads, kv)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        width = linear_weight(block.mlp.dense_h_to_4h).shape[0]
        return [Mlp(block.mlp, {"dense_h_to_4h": head_major(width, 1)}, "dense_4h_to_h", width, "ffn_hidden_size")]
