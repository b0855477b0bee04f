"""`kind: merge_experts`: the least-routed experts of every mixture-of-experts layer merged into kept ones.

The method of MC-SMoE (Li et al., 2024, "Merge, Then Compress: Demystify Efficient SMoE with Hints from Routing
Policy", arXiv:2310.01334, its merging stage): per layer, the experts the router uses most on calibration text
are dominant and stay; every other expert joins the dominant expert it is most similar to, by the similarity of
their router logits over the calibration tokens (MC-SMoE's default) or of their weights. Each group becomes one
expert: the routing-frequency-weighted average of its members' matrices, after each member's intermediate
neurons are permuted to match the dominant expert's (weight matching as in Ainsworth et al., 2023, "Git
Re-Basin", arXiv:2209.04836, solved by `scipy.optimize.linear_sum_assignment`). Permuting an expert's neurons
leaves its function unchanged, so the alignment only decides which neurons are averaged together. A group whose
members received no calibration tokens at all is averaged uniformly, and the count of such groups is reported.

The router then either keeps every row and sends a merged expert's tokens to its group's expert (`router:
redirect`, as MC-SMoE), or loses the merged experts' rows and renormalises over the rest (`router: drop`, as
expert pruning; the config's expert count follows). Everything is replaced through the undo log, so restore
puts the fused experts, the router and the config back.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from doctor.architectures import Unsupported, architecture_of
from doctor.architectures.moe import Expert, SplitExperts
from doctor.architectures.routing import Routing
from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.experts import EXPERT_COUNT_KEYS, _experts_of, drop_experts, routed_model
from doctor.patient import count_params
from doctor.results import LayerStat

log = logging.getLogger(__name__)


def neuron_features(expert: Expert) -> torch.Tensor:
    """(intermediate, 3 * hidden): each intermediate neuron's gate row, up row and down column."""
    gate, up = expert.gate_up_proj.weight.detach().chunk(2, dim=0)
    return torch.cat([gate, up, expert.down_proj.weight.detach().T], dim=1)


def alignment(anchor: Expert, other: Expert) -> torch.Tensor:
    """The permutation of `other`'s neurons that best matches `anchor`'s (largest total inner product)."""
    score = neuron_features(anchor).double() @ neuron_features(other).double().T
    _rows, cols = linear_sum_assignment(score.cpu().numpy(), maximize=True)  # square: rows come out as 0..n-1
    return torch.as_tensor(cols, device=score.device)


def permuted(expert: Expert, order: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The expert's (gate_up, down) matrices with its neurons in `order` (None: as they are)."""
    gate_up, down = expert.gate_up_proj.weight.detach(), expert.down_proj.weight.detach()
    if order is None:
        return gate_up, down
    gate, up = gate_up.chunk(2, dim=0)
    return torch.cat([gate[order], up[order]]), down[:, order]


def merge_group(members: list[Expert], weights: torch.Tensor, align: bool) -> Expert:
    """One expert: the `weights`-weighted average of `members` (the first is the anchor the others align to)."""
    gate_up = torch.zeros_like(members[0].gate_up_proj.weight, dtype=torch.float32)
    down = torch.zeros_like(members[0].down_proj.weight, dtype=torch.float32)
    for expert, weight in zip(members, weights.tolist(), strict=True):
        order = alignment(members[0], expert) if align and expert is not members[0] else None
        g, d = permuted(expert, order)
        gate_up += weight * g.float()
        down += weight * d.float()
    dtype = members[0].gate_up_proj.weight.dtype
    return Expert(gate_up.to(dtype), down.to(dtype), members[0].act_fn)


def similarity(experts: SplitExperts, routing: Routing | None, by: str) -> torch.Tensor:
    """(experts, experts) cosine similarity of router logits over the calibration tokens, or of the weights."""
    if by == "router-logits":
        columns = routing.logits.T  # (experts, tokens)
    else:
        columns = torch.stack([torch.cat([e.gate_up_proj.weight.detach().flatten(), e.down_proj.weight.detach()
                                          .flatten()]).float().cpu() for e in experts])
    unit = F.normalize(columns.float(), dim=1)
    return unit @ unit.T


def groups_of(share: torch.Tensor, sim: torch.Tensor, count: int) -> dict[int, list[int]]:
    """Dominant expert -> its members (itself first): the `count` least-routed experts join the most similar
    dominant one."""
    order = torch.argsort(-share, stable=True).tolist()
    dominant = sorted(order[: len(order) - count])
    groups = {k: [k] for k in dominant}
    for e in sorted(order[len(order) - count:]):
        target = max(dominant, key=lambda k: (float(sim[e, k]), -k))
        groups[target].append(e)
    return groups


def _count(spec, experts: int, top_k: int) -> int:
    count = spec.count if spec.count is not None else max(1, round(spec.fraction * experts))
    if count >= experts:
        raise Unsupported(f"expert merging: merging {count} of {experts} experts leaves none")
    if spec.router == "drop" and experts - count < top_k:
        raise Unsupported(f"expert merging: dropping the router rows of {count} of {experts} experts leaves fewer "
                          f"than the {top_k} each token is routed to; use router: redirect")
    return count


def apply_merge_experts(spec, ctx: ApplyContext) -> Applied:
    """Merge the least-routed experts of every MoE layer; realized facts say which went into which."""
    routed = routed_model(spec, ctx, "expert merging", "routing frequencies and router logits")
    model, moe_layers, routing, top_k, params_before, blocks = (
        routed.model, routed.moe_layers, routed.routing, routed.top_k, routed.params_before, routed.blocks)
    count = _count(spec, routing[0].experts, top_k)
    stats, merged_into, uniform = [], {}, 0
    for r in routing:
        block = blocks[r.layer]
        owner, attr = _experts_of(block)
        experts: SplitExperts = getattr(owner, attr)
        share = r.frequency()
        groups = groups_of(share, similarity(experts, r, spec.similarity), count)
        merged = {}
        for anchor, members in groups.items():
            weights = share[members].double()
            if float(weights.sum()) == 0:
                uniform += 1
                weights = torch.ones(len(members), dtype=torch.float64)
            merged[anchor] = merge_group([experts[m] for m in members], weights / weights.sum(), spec.align)
        group_of = {m: anchor for anchor, members in groups.items() for m in members}
        if spec.router == "drop":
            drop_experts(block, architecture_of(block).router(block), sorted(groups), ctx.undo)
            replacement = SplitExperts(merged[k] for k in sorted(groups))
        else:  # every router row stays; a merged expert's slot holds its group's expert
            replacement = SplitExperts(merged[group_of[e]] for e in range(r.experts))
        replacement.num_experts = len(replacement)
        ctx.undo.set_attr(owner, attr, replacement)
        merged_into[r.layer] = {e: k for e, k in group_of.items() if e != k}
        share_merged = float(share[list(merged_into[r.layer])].sum())
        stats.append(LayerStat(layer=r.layer, extra={"merged_token_share": share_merged}))
    if spec.router == "drop":
        for key in EXPERT_COUNT_KEYS:
            if isinstance(getattr(model.config, key, None), int):
                ctx.undo.set_attr(model.config, key, routing[0].experts - count)
    done = sorted(merged_into)
    if done != sorted(moe_layers):
        raise ModificationError(f"expert merging reached MoE layers {done} of {sorted(moe_layers)}")
    params_after = count_params(model)
    log.info("merged experts %s", merged_into)
    realized = {
        "experts_before": routing[0].experts,
        "experts_merged_per_layer": count,
        "experts_after": routing[0].experts - count,
        "merged_into": {str(layer): {str(e): k for e, k in m.items()} for layer, m in merged_into.items()},
        "merged_token_share_mean": sum(s.extra["merged_token_share"] for s in stats) / len(stats),
        "similarity": spec.similarity,
        "router": spec.router,
        "align": spec.align,
        "moe_layers": len(moe_layers),
        "coverage": len(done) / len(moe_layers),
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    if uniform:
        realized["uniform_average_groups"] = uniform
    return Applied(realized=realized, layers=stats, calibration=routed.calibration.info)
