"""Hybrid blocks (Jamba, Bamba): each layer mixes with either attention or a Mamba mixer, then a feed-forward
that is dense (gate/up/down) or a mixture of experts (router + fused experts), under `feed_forward`.

Targets: attention q/k/v/o, the Mamba projections (dt_proj, A_log, D, dt_bias and the convolution kept, as in
plain Mamba), the dense MLP and every expert (split as for MoE blocks; the router is kept). Head pruning prunes
the attention layers (the config's head counts describe those only); channel pruning works on every
feed-forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from doctor.architectures.base import (
    Architecture,
    Attention,
    Mlp,
    ScaleGroup,
    Unsupported,
    has,
    head_major,
    linear_weight,
    params_at,
    separate_qkv,
)
from doctor.architectures.moe import EXPERT_IN, SplitExperts, is_fused

ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
SSM_PARAMS = ("mamba.dt_proj.weight", "mamba.A_log", "mamba.D", "mamba.conv1d.weight")
KEPT = {
    "mamba.dt_proj": "time-step projection kept (used as a bare matrix inside the scan)",
    "mamba.A_log": "state matrix kept (recurrence)",
    "mamba.D": "skip coefficients kept (recurrence)",
    "mamba.dt_bias": "time-step bias kept (recurrence)",
    "mamba.conv1d": "depthwise convolution kept",
    "feed_forward.router": "router kept in full precision (routing decisions)",
}


@dataclass
class Hybrid(Architecture):
    name: str = "hybrid"
    kept_linears: dict[str, str] = field(default_factory=lambda: dict(KEPT))
    output_projections: tuple[str, ...] = ("self_attn.o_proj", "mamba.out_proj", "feed_forward.down_proj",
                                           "feed_forward.experts.down_proj")

    def matches(self, block: nn.Module) -> bool:
        mixer = has(block, *ATTN, "self_attn.o_proj") or has(block, "mamba.in_proj", "mamba.out_proj")
        return mixer and has(block, "feed_forward", "pre_ff_layernorm")

    def router(self, block: nn.Module) -> nn.Module | None:
        return getattr(block.feed_forward, "router", None)

    def prepare(self, block: nn.Module, undo) -> None:
        if has(block, "feed_forward.experts") and is_fused(block.feed_forward.experts):
            undo.set_attr(block.feed_forward, "experts", SplitExperts.from_fused(block.feed_forward.experts))

    def module_type(self, name: str) -> str:
        if name.startswith("mamba."):
            return "ssm"
        if name.startswith("feed_forward.experts."):
            return "experts"
        if name.startswith("feed_forward."):
            return "mlp"
        return super().module_type(name)

    def groups(self, block: nn.Module) -> list[list[str]]:
        names = list(self.linears(block))
        mixer = [list(ATTN), ["self_attn.o_proj"]] if has(block, "self_attn") else [
            ["mamba.in_proj"], ["mamba.x_proj"], ["mamba.out_proj"]]
        ffn = [n for n in names if n.startswith("feed_forward.")]
        first = [n for n in ffn if n.rsplit(".", 1)[-1] in EXPERT_IN]
        return [*mixer, first, [n for n in ffn if n not in first]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        groups = {("mamba.in_proj",): ScaleGroup("input_layernorm", "mamba")}
        if has(block, "self_attn"):
            groups = {ATTN: ScaleGroup("input_layernorm", "self_attn"),
                      ("self_attn.o_proj",): ScaleGroup("self_attn.v_proj", "self_attn.o_proj")}
        if has(block, "feed_forward.up_proj"):  # dense; expert inputs share the norm with the router
            groups[("feed_forward.gate_proj", "feed_forward.up_proj")] = ScaleGroup("pre_ff_layernorm", "feed_forward")
            groups[("feed_forward.down_proj",)] = ScaleGroup("feed_forward.up_proj", "feed_forward.down_proj")
        return groups

    def remap_layer_config(self, config, blocks: list[nn.Module], sources: list[int], undo) -> None:
        """Bamba lists its attention layers (remapped); Jamba derives them from a period and an offset, which
        must still describe the new layers, or the change is unsupported."""
        if isinstance(getattr(config, "attn_layer_indices", None), list):
            old = set(config.attn_layer_indices)
            undo.set_attr(config, "attn_layer_indices", [p for p, s in enumerate(sources) if s in old])
            return
        if not hasattr(config, "attn_layer_period"):
            return super().remap_layer_config(config, blocks, sources, undo)
        for p, block in enumerate(blocks):
            attention = p % config.attn_layer_period == config.attn_layer_offset
            experts = p % config.expert_layer_period == config.expert_layer_offset
            if attention != has(block, "self_attn") or experts != has(block, "feed_forward.experts"):
                raise Unsupported(
                    f"the config gives layer types by attn_layer_period/offset and expert_layer_period/offset, "
                    f"which cannot describe layer {p} of the new order (from layer {sources[p]})"
                )

    def ssm_params(self, block: nn.Module) -> dict[str, torch.Tensor]:
        return params_at(block, SSM_PARAMS)

    def onnx_blocker(self, block: nn.Module) -> str | None:
        if has(block, "mamba"):
            return ("ONNX export: the exporter specialises the Mamba mixer's scan (chunked or token by token) to "
                    "the traced sequence length, so the graph would only take that length")
        return None

    def has_heads(self, block: nn.Module) -> bool:
        return has(block, "self_attn")

    def attention(self, block: nn.Module) -> Attention:
        if not has(block, "self_attn"):
            raise Unsupported("head pruning: this hybrid model's layers are Mamba layers without attention heads")
        attn = block.self_attn
        hd = attn.head_dim
        heads, kv = linear_weight(attn.q_proj).shape[0] // hd, linear_weight(attn.k_proj).shape[0] // hd
        return Attention(attn, separate_qkv(heads, kv, hd), "o_proj", hd, heads, kv)

    def mlps(self, block: nn.Module) -> list[Mlp]:
        ff = block.feed_forward
        if has(ff, "up_proj"):
            width = linear_weight(ff.up_proj).shape[0]
            rows = head_major(width, 1)
            return [Mlp(ff, {"gate_proj": rows, "up_proj": rows}, "down_proj", width, "intermediate_size")]
        units = []
        for expert in ff.experts:
            width = linear_weight(expert.down_proj).shape[1]
            rows = head_major(width, 1)
            units.append(Mlp(expert, {"gate_up_proj": torch.cat([rows, rows])}, "down_proj", width,
                             "intermediate_size"))
        return units
