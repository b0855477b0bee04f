"""GPT-2 blocks: `Conv1D` layers storing (in, out), one fused `c_attn` stacking q, k and v (multi-head)."""

from __future__ import annotations

from dataclasses import dataclass

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
class Gpt2(Architecture):
    name: str = "gpt2"
    output_projections: tuple[str, ...] = ("attn.c_proj", "mlp.c_proj")

    def matches(self, block: nn.Module) -> bool:
        return has(block, "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        # the value rows are the last third of c_attn; mlp.c_proj follows a GELU and is not scaled
        width = linear_weight(block.attn.c_proj).shape[1]
        return {
            ("attn.c_attn",): ScaleGroup("ln_1", "attn"),
            ("attn.c_proj",): ScaleGroup("attn.c_attn", "attn.c_proj", shared=width),
            ("mlp.c_fc",): ScaleGroup("ln_2", "mlp"),
        }

    def attention(self, block: nn.Module) -> Attention:
        attn = block.attn
        return Attention(attn, {"c_attn": stacked_qkv(attn.num_heads, attn.num_heads, attn.head_dim)}, "c_proj",
                         attn.head_dim, attn.num_heads, attn.num_heads)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        width = linear_weight(block.mlp.c_fc).shape[0]
        return [Mlp(block.mlp, {"c_fc": head_major(width, 1)}, "c_proj", width, "n_inner")]
