"""OPT blocks: q/k/v/out_proj attention and the MLP's fc1/fc2 directly on the block (ReLU between them).

With `do_layer_norm_before` false (OPT-350m) the norms act after each sub-block, so they do not produce the
linears' inputs and AWQ does not scale those groups.
"""

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
    separate_qkv,
)

ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


@dataclass
class Opt(Architecture):
    name: str = "opt"
    output_projections: tuple[str, ...] = ("self_attn.out_proj", "fc2")

    def matches(self, block: nn.Module) -> bool:
        return has(block, *ATTN, "self_attn.out_proj", "fc1", "fc2")

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [list(ATTN), ["self_attn.out_proj"], ["fc1"], ["fc2"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        groups = {
            ("self_attn.out_proj",): ScaleGroup("self_attn.v_proj", "self_attn.out_proj"),
            ("fc2",): ScaleGroup("fc1", "fc2"),  # ReLU(x / s) = ReLU(x) / s for s > 0: exact
        }
        if getattr(block, "do_layer_norm_before", True):
            groups[ATTN] = ScaleGroup("self_attn_layer_norm", "self_attn")
            groups[("fc1",)] = ScaleGroup("final_layer_norm", "fc1")
        return groups

    def attention(self, block: nn.Module) -> Attention:
        attn = block.self_attn
        hd = attn.head_dim
        heads = linear_weight(attn.q_proj).shape[0] // hd
        return Attention(attn, separate_qkv(heads, heads, hd), "out_proj", hd, heads, heads)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        width = linear_weight(block.fc1).shape[0]
        return [Mlp(block, {"fc1": head_major(width, 1)}, "fc2", width, "ffn_dim")]
