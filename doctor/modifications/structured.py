"""Structured pruning as a modification: heads or MLP channels chosen by the spec, removed from every decoder
layer through the undo log, with the config kept true. The importance scores and the module surgery helpers are
tensor math in `doctor.compress.structured`; see there for the method and its references.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from doctor.architectures import Attention, Mlp, Unsupported, architecture_of
from doctor.compress.adapters import decoder_layers, linear_weight
from doctor.compress.structured import (
    attention_of,
    channel_scores,
    head_rows,
    head_scores,
    input_norms,
    mlps_of,
    shrink_linear,
)
from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext, UndoLog
from doctor.patient import count_params
from doctor.results import LayerStat
from doctor.spec.modification import PruneSpec

log = logging.getLogger(__name__)


def _count(fraction: float, units: int, what: str) -> int:
    """Units to remove: the nearest whole number, at least one, never all."""
    if units < 2:
        hint = "; try head_unit: query" if what == "KV groups" else ""
        raise Unsupported(f"structured pruning: only {units} {what} per layer, nothing can be removed{hint}")
    return min(max(1, round(fraction * units)), units - 1)


def choose_heads(a: Attention, q: torch.Tensor, kv: torch.Tensor, spec: PruneSpec) -> tuple[list[int], list[int]]:
    """Query heads and KV heads to keep, in their original order."""
    per_group = a.heads // a.kv_heads
    groups = q.reshape(a.kv_heads, per_group)
    if spec.head_unit == "kv_group":
        score = groups.sum(1) + kv
        drop = _count(spec.sparsity, a.kv_heads, "KV groups")
        keep_kv = sorted(torch.topk(score, a.kv_heads - drop).indices.tolist())
        return [g * per_group + j for g in keep_kv for j in range(per_group)], keep_kv
    if per_group < 2:
        raise ModificationError("head_unit 'query' needs grouped-query attention (several query heads per KV head)")
    drop = _count(spec.sparsity, per_group, "query heads per KV group")
    keep_in_group = torch.topk(groups, per_group - drop, dim=1).indices.sort(dim=1).values
    keep_q = [g * per_group + int(j) for g in range(a.kv_heads) for j in keep_in_group[g]]
    return keep_q, list(range(a.kv_heads))


def _prune_heads(a: Attention, keep_q: list[int], keep_kv: list[int], undo: UndoLog) -> None:
    q_keep, kv_keep = torch.tensor(keep_q, dtype=torch.long), torch.tensor(keep_kv, dtype=torch.long)
    for attr, (q_of, kv_of) in a.inputs.items():
        keep = torch.isin(q_of, q_keep) | torch.isin(kv_of, kv_keep)
        undo.set_attr(a.module, attr, shrink_linear(getattr(a.module, attr), "out", keep.nonzero().flatten()))
    undo.set_attr(a.module, a.out, shrink_linear(getattr(a.module, a.out), "in", head_rows(keep_q, a.head_dim)))
    new_attrs = {
        "num_heads": len(keep_q),
        "num_key_value_heads": len(keep_kv),
        "num_kv_heads": len(keep_kv),  # Falcon
        "num_key_value_groups": len(keep_q) // len(keep_kv),
        "split_size": len(keep_q) * a.head_dim,  # GPT-2 splits its fused projection by this width
        "num_attention_heads": len(keep_q),
    }
    for name, value in new_attrs.items():
        if isinstance(getattr(a.module, name, None), int):
            undo.set_attr(a.module, name, value)


def _prune_channels(m: Mlp, keep: torch.Tensor, undo: UndoLog) -> None:
    for attr, channel_of in m.inputs.items():
        rows = torch.isin(channel_of, keep).nonzero().flatten()
        undo.set_attr(m.module, attr, shrink_linear(getattr(m.module, attr), "out", rows))
    undo.set_attr(m.module, m.out, shrink_linear(getattr(m.module, m.out), "in", keep))
    for name in ("intermediate_size", "ffn_dim"):
        if isinstance(getattr(m.module, name, None), int):
            undo.set_attr(m.module, name, int(keep.numel()))


def _calibration_norms(spec: PruneSpec, ctx: ApplyContext, outs: list[list[nn.Module]]) -> tuple[list, object]:
    if spec.method != "wanda":
        return [[None] * len(o) for o in outs], None
    cal = ctx.calibration(spec.calibration)
    ctx.progress("structured pruning: input norms")
    return input_norms(ctx.patient.model, outs, cal.windows), cal.info


def _update_config(model: nn.Module, spec: PruneSpec, attn: Attention | None, kept: dict[str, int],
                   undo: UndoLog) -> None:
    """The config describes every layer; the same number of units is removed per layer, so it stays true."""
    config = model.config
    if spec.structure == "channels":
        for key, width in kept.items():
            undo.set_attr(config, key, width)
        return
    heads = kept["heads"]
    kv = attn.kv_heads if spec.head_unit == "query" else attn.kv_heads * heads // attn.heads
    undo.set_attr(config, "num_attention_heads", heads)
    for key in ("num_key_value_heads", "num_kv_heads"):
        if getattr(config, key, None) is not None:
            undo.set_attr(config, key, kv)


def _prune_block_heads(part: Attention, norm, spec: PruneSpec, undo: UndoLog) -> dict[str, float]:
    keep_q, keep_kv = choose_heads(part, *head_scores(part, spec.method, norm), spec)
    _prune_heads(part, keep_q, keep_kv, undo)
    return {"heads_removed": part.heads - len(keep_q), "kv_heads_removed": part.kv_heads - len(keep_kv)}


def _prune_block_channels(units: list[Mlp], norms: list, spec: PruneSpec, undo: UndoLog) -> dict[str, float]:
    """The same fraction of channels out of every feed-forward unit of the block (every expert)."""
    removed = 0
    for unit, norm in zip(units, norms, strict=True):
        score = channel_scores(unit, spec.method, norm)
        keep = torch.topk(score, unit.width - _count(spec.sparsity, unit.width, "MLP channels")).indices.sort().values
        _prune_channels(unit, keep, undo)
        removed += unit.width - int(keep.numel())
    return {"channels_removed": removed}


def _units(blocks: list[nn.Module], heads: bool) -> list[list]:
    """Per block, what is pruned: its attention (none for a hybrid model's Mamba layers) or its MLPs."""
    if not heads:
        return [mlps_of(b) for b in blocks]
    parts = [[attention_of(b)] if architecture_of(b).has_heads(b) else [] for b in blocks]
    if not any(parts):
        attention_of(blocks[0])  # raises the adapter's reason
    return parts


def apply_structured(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    """Remove heads or MLP channels from every decoder layer; realized facts give params before and after."""
    model = ctx.patient.model
    blocks = list(decoder_layers(model))
    params_before = count_params(model)
    heads = spec.structure == "heads"
    parts = _units(blocks, heads)
    norms, cal_info = _calibration_norms(spec, ctx, [[getattr(p.module, p.out) for p in ps] for ps in parts])
    stats = []
    for index, (units, norm) in enumerate(zip(parts, norms, strict=True)):
        if not units:
            continue
        if heads:
            extra = _prune_block_heads(units[0], norm[0], spec, ctx.undo)
        else:
            extra = _prune_block_channels(units, norm, spec, ctx.undo)
        stats.append(LayerStat(layer=index, extra={k: float(v) for k, v in extra.items()}))
    unit = "heads" if heads else "channels"
    pruned = [ps for ps in parts if ps]
    before = pruned[0][0].heads if heads else sum(u.width for u in pruned[0])
    removed = [int(s.extra[f"{unit}_removed"]) for s in stats]
    if heads:
        kept = {"heads": before - removed[-1]}
    else:
        kept = {u.config_key: linear_weight(getattr(u.module, u.out)).shape[1] for u in pruned[-1] if u.config_key}
    _update_config(model, spec, pruned[0][0] if heads else None, kept, ctx.undo)
    params_after = count_params(model)
    realized = {
        "structure": spec.structure,
        f"{unit}_before": before,
        f"{unit}_removed_per_layer": removed,
        f"{unit}_removed_fraction": sum(removed) / (before * len(pruned)),
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    if heads:
        realized["kv_heads_removed_per_layer"] = [int(s.extra["kv_heads_removed"]) for s in stats]
    log.info("structured pruning removed %s %s per layer", removed, unit)
    return Applied(realized=realized, layers=stats, calibration=cal_info)
