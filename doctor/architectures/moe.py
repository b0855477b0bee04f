"""Mixture-of-experts blocks (Mixtral, Qwen2-MoE, ...): Llama-like attention, a router and a set of experts.

transformers 5 stores all experts of a block as two fused 3-D parameters (`gate_up_proj`: (experts, 2 * inter,
hidden), `down_proj`: (experts, hidden, inter)). For a weight modification the fused module is replaced, through
the undo log, by `SplitExperts`: one `gate_up_proj` and one `down_proj` linear per expert holding copies of the
same matrices and computing the same function. Every expert is then an ordinary linear layer to quantize or
prune, and a hook on it sees exactly the tokens the router sends to that expert, so GPTQ's Hessian, Wanda's
norms and SparseGPT's statistics of an expert come from its own routed tokens. Restore puts the fused module,
never written, back. Routers (and Qwen2-MoE's shared-expert gate) stay in full precision, as in AutoGPTQ and
llm-awq, and are stated as kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from doctor.architectures.base import Mlp, ScaleGroup, has, head_major, linear_weight
from doctor.architectures.llama import ATTN, LlamaLike

ROUTERS = {
    "mlp.gate": "router kept in full precision (routing decisions)",
    "mlp.shared_expert_gate": "shared-expert gate kept in full precision",
}
EXPERT_IN = ("gate_up_proj", "gate_proj", "up_proj", "w1", "w3")


class Expert(nn.Module):
    """One expert as two linears: gate and up stacked in `gate_up_proj` (as fused), then `down_proj`."""

    def __init__(self, gate_up: torch.Tensor, down: torch.Tensor, act_fn: nn.Module) -> None:
        super().__init__()
        inter2, hidden = gate_up.shape  # (2 * inter, hidden)
        with torch.device("meta"):
            self.gate_up_proj = nn.Linear(hidden, inter2, bias=False)
            self.down_proj = nn.Linear(down.shape[1], hidden, bias=False)
        self.gate_up_proj.weight = nn.Parameter(gate_up.detach().clone(), requires_grad=False)
        self.down_proj.weight = nn.Parameter(down.detach().clone(), requires_grad=False)
        self.act_fn = act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)


class SplitExperts(nn.ModuleList):
    """Drop-in for transformers' fused experts module: forward(hidden, top_k_index, top_k_weights)."""

    @classmethod
    def from_fused(cls, fused: nn.Module) -> SplitExperts:
        experts = cls(Expert(fused.gate_up_proj[e], fused.down_proj[e], fused.act_fn)
                      for e in range(fused.gate_up_proj.shape[0]))
        experts.num_experts = len(experts)
        return experts

    def forward(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return self.dense(hidden, top_k_index, top_k_weights)
        out = torch.zeros_like(hidden)  # hidden: (tokens, hidden)
        for e, expert in enumerate(self):
            token_idx, slot = torch.where(top_k_index == e)
            if token_idx.numel():
                y = expert(hidden[token_idx]) * top_k_weights[token_idx, slot, None]
                out.index_add_(0, token_idx, y.to(out.dtype))
        return out


    def dense(self, hidden: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """The same sum with every expert run on every token at routing weight 0 where not chosen: no
        data-dependent shapes, so an exporter can trace it."""
        out = torch.zeros_like(hidden)
        for e, expert in enumerate(self):
            weight = (top_k_weights * (top_k_index == e)).sum(-1, keepdim=True)
            out = out + (expert(hidden) * weight).to(out.dtype)
        return out


def is_fused(experts: nn.Module) -> bool:
    weight = getattr(experts, "gate_up_proj", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 3


@dataclass
class MixtureOfExperts(LlamaLike):
    name: str = "moe"
    output_projections: tuple[str, ...] = ("self_attn.o_proj", "mlp.experts.down_proj", "mlp.shared_expert.down_proj")
    kept_linears: dict[str, str] = field(default_factory=lambda: dict(ROUTERS))

    def matches(self, block: nn.Module) -> bool:
        return has(block, *ATTN, "self_attn.o_proj", "mlp.gate", "mlp.experts")

    def router(self, block: nn.Module) -> nn.Module | None:
        return block.mlp.gate

    def prepare(self, block: nn.Module, undo) -> None:
        if is_fused(block.mlp.experts):
            undo.set_attr(block.mlp, "experts", SplitExperts.from_fused(block.mlp.experts))

    def module_type(self, name: str) -> str:
        if name.startswith("mlp.experts."):
            return "experts"
        if name.startswith("mlp.shared_expert."):
            return "shared_expert"
        return super().module_type(name)

    def groups(self, block: nn.Module) -> list[list[str]]:
        """Attention as Llama; then every expert's (and the shared expert's) input linears, then their outputs.

        Experts run in parallel on their own tokens, so one group of all of them is still true-sequential.
        """
        names = [n for n in self.linears(block) if n.startswith("mlp.")]
        first = [n for n in names if n.rsplit(".", 1)[-1] in EXPERT_IN]
        return [list(ATTN), ["self_attn.o_proj"], first, [n for n in names if n not in first]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        # the shared norm also feeds the router, so expert inputs are not scaled (the router would change)
        return {k: v for k, v in super().scale_groups(block).items() if k[0].startswith("self_attn.")}

    def mlps(self, block: nn.Module) -> list[Mlp]:
        """Each split expert, and the shared expert: channels are pruned inside every one of them."""
        experts = block.mlp.experts
        if is_fused(experts):
            raise RuntimeError("experts must be split (prepare) before channel pruning")
        units = []
        key = "moe_intermediate_size" if has(block, "mlp.shared_expert") else "intermediate_size"
        for expert in experts:
            if not has(expert, "gate_up_proj", "down_proj"):
                return super().mlps(block)
            width = linear_weight(expert.down_proj).shape[1]
            rows = head_major(width, 1)
            units.append(Mlp(expert, {"gate_up_proj": torch.cat([rows, rows])}, "down_proj", width, key))
        shared = getattr(block.mlp, "shared_expert", None)
        if shared is not None:
            width = linear_weight(shared.up_proj).shape[0]
            rows = head_major(width, 1)
            units.append(Mlp(shared, {"gate_proj": rows, "up_proj": rows}, "down_proj", width,
                             "shared_expert_intermediate_size"))
        return units
