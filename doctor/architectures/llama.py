"""Llama-like blocks (Llama, Mistral, Qwen2, Gemma, Gemma 2, ...): separate q/k/v/o and gate/up/down projections.

Gemma 2 normalises the MLP input with `pre_feedforward_layernorm` (its `post_attention_layernorm` acts on the
attention output), so that norm is the MLP's producer there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from doctor.architectures.base import (
    Architecture,
    Attention,
    Mlp,
    ScaleGroup,
    has,
    head_major,
    linear_weight,
    separate_qkv,
)

ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj")


@dataclass
class LlamaLike(Architecture):
    name: str = "llama"
    output_projections: tuple[str, ...] = ("self_attn.o_proj", "mlp.down_proj")
    kept_linears: dict[str, str] = field(default_factory=dict)

    def matches(self, block: nn.Module) -> bool:
        return has(block, *ATTN, "self_attn.o_proj", *MLP, "mlp.down_proj")

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [list(ATTN), ["self_attn.o_proj"], list(MLP), ["mlp.down_proj"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        mlp_norm = "pre_feedforward_layernorm" if has(block, "pre_feedforward_layernorm") else "post_attention_layernorm"
        return {
            ATTN: ScaleGroup("input_layernorm", "self_attn"),
            ("self_attn.o_proj",): ScaleGroup("self_attn.v_proj", "self_attn.o_proj"),
            MLP: ScaleGroup(mlp_norm, "mlp"),
            ("mlp.down_proj",): ScaleGroup("mlp.up_proj", "mlp.down_proj"),
        }

    def attention(self, block: nn.Module) -> Attention:
        attn = block.self_attn
        hd = attn.head_dim
        heads, kv = linear_weight(attn.q_proj).shape[0] // hd, linear_weight(attn.k_proj).shape[0] // hd
        return Attention(attn, separate_qkv(heads, kv, hd), "o_proj", hd, heads, kv)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        mlp = block.mlp
        width = linear_weight(mlp.up_proj).shape[0]
        rows = head_major(width, 1)
        return [Mlp(mlp, {"gate_proj": rows, "up_proj": rows}, "down_proj", width, "intermediate_size")]
