"""`kind: prune_experts`: whole experts removed from every mixture-of-experts layer, least-routed first.

Experts are ranked per layer by the share of calibration tokens the router sends them (the frequency criterion
of Muzio et al., 2024, "SEER-MoE: Sparse Expert Efficiency through Regularization for Mixture-of-Experts",
arXiv:2404.05089), and the same number is removed from every MoE layer, so one config stays true. The router
loses the removed experts' rows, so it renormalises over the rest (softmax then top-k, as before). Everything
is replaced through the undo log: restore puts the fused experts, the router and the config back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from doctor.architectures import Unsupported, architecture_of
from doctor.architectures.moe import SplitExperts
from doctor.architectures.routing import capture_routing, routers
from doctor.compress.adapters import decoder_layers
from doctor.modifications.base import Applied, ApplyContext, UndoLog
from doctor.modifications.coverage import prepare_targets
from doctor.patient import count_params
from doctor.results import LayerStat

log = logging.getLogger(__name__)
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def _experts_of(block: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the block's (split) experts and its attribute name."""
    for owner_path in ("mlp", "feed_forward", "block_sparse_moe"):
        owner = getattr(block, owner_path, None)
        if isinstance(getattr(owner, "experts", None), SplitExperts):
            return owner, "experts"
    raise Unsupported(f"expert pruning: the experts of {type(block).__name__} are not in a known layout")


def drop_experts(block: nn.Module, router: nn.Module, keep: list[int], undo: UndoLog) -> None:
    """Keep only experts `keep` (in order) in one block: the expert list and the router's rows."""
    owner, attr = _experts_of(block)
    old = getattr(owner, attr)
    kept = SplitExperts(old[i] for i in keep)
    kept.num_experts = len(keep)
    undo.set_attr(owner, attr, kept)
    index = torch.tensor(keep, device=router.weight.device)
    undo.set_attr(router, "weight", nn.Parameter(router.weight.detach()[index].clone(), requires_grad=False))
    if getattr(router, "bias", None) is not None:
        undo.set_attr(router, "bias", nn.Parameter(router.bias.detach()[index].clone(), requires_grad=False))
    for module in (router, owner):
        if isinstance(getattr(module, "num_experts", None), int):
            undo.set_attr(module, "num_experts", len(keep))


def _count(spec, experts: int, top_k: int) -> int:
    count = spec.count if spec.count is not None else max(1, round(spec.fraction * experts))
    if experts - count < top_k:
        raise Unsupported(f"expert pruning: removing {count} of {experts} experts leaves fewer than the "
                          f"{top_k} each token is routed to")
    return count


@dataclass
class RoutedModel:
    """What expert pruning and merging start from: the model's MoE layers and the calibration tokens' routing."""

    model: nn.Module
    moe_layers: list[int]
    routing: list  # doctor.architectures.routing.Routing per MoE layer
    top_k: int
    params_before: int
    blocks: list[nn.Module]
    calibration: object  # the calibration set, for its info in the result


def routed_model(spec, ctx: ApplyContext, what: str, gathering: str) -> RoutedModel:
    """Refuse a dense model, then route the calibration windows through every MoE layer."""
    model = ctx.patient.model
    moe_layers = routers(model)
    if not moe_layers:
        raise Unsupported(f"{what}: {type(model).__name__} has no mixture-of-experts layers")
    prepare_targets(model, ctx.undo)
    cal = ctx.calibration(spec.calibration)
    ctx.progress(f"{what}: {gathering}")
    routing = capture_routing(model, cal.windows)
    return RoutedModel(model, moe_layers, routing, routing[0].chosen.shape[1], count_params(model),
                       decoder_layers(model), cal)


def apply_prune_experts(spec, ctx: ApplyContext) -> Applied:
    """Remove the least-routed experts of every MoE layer; realized facts name them and their token shares."""
    routed = routed_model(spec, ctx, "expert pruning", "routing frequencies")
    model, routing, top_k, params_before, blocks = (routed.model, routed.routing, routed.top_k,
                                                    routed.params_before, routed.blocks)
    count = _count(spec, routing[0].experts, top_k)
    stats, removed = [], {}
    for r in routing:
        share = r.frequency()
        drop = sorted(torch.argsort(share, stable=True)[:count].tolist())
        keep = [e for e in range(r.experts) if e not in drop]
        drop_experts(blocks[r.layer], architecture_of(blocks[r.layer]).router(blocks[r.layer]), keep, ctx.undo)
        removed[r.layer] = drop
        stats.append(LayerStat(layer=r.layer, extra={"removed_token_share": float(share[drop].sum())}))
    for key in EXPERT_COUNT_KEYS:
        if isinstance(getattr(model.config, key, None), int):
            ctx.undo.set_attr(model.config, key, routing[0].experts - count)
    params_after = count_params(model)
    log.info("removed experts %s", removed)
    realized = {
        "experts_before": routing[0].experts,
        "experts_removed_per_layer": count,
        "experts_removed": {str(k): v for k, v in removed.items()},
        "removed_token_share_mean": sum(s.extra["removed_token_share"] for s in stats) / len(stats),
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    return Applied(realized=realized, layers=stats, calibration=routed.calibration.info)
