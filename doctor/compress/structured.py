"""Structured pruning: whole attention heads or MLP intermediate channels, removed so the shapes shrink.

Units are ranked per layer and the same number is removed from every layer (FLAP's uniform "UL-UM" structure:
An et al., 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language Models", AAAI,
CASIA-IVA-Lab/FLAP lib/prune.py @ 9bbad71), which keeps one valid config for the whole model. Importance:
- 'magnitude': squared weight norm of every parameter the unit owns (its q/k/v rows and o columns, or its
  gate/up rows and down column).
- 'wanda': Wanda's |W_ij| * ||X_j|| summed over the output projection's input columns that belong to the unit
  (the Wanda-sp baseline; Sun et al., 2024, arXiv:2306.11695; FLAP's WIFN metric), with X from calibration.
Grouped-query attention: `head_unit: kv_group` removes a KV head with all the query heads that read it;
`head_unit: query` removes the same number of query heads from every group, so each KV head keeps serving a
whole group and `num_key_value_groups` shrinks. Modules are replaced (not resized in place) through the undo
log, and so are config and attention attributes, so restore is exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from doctor.compress.adapters import decoder_layers, linear_weight
from doctor.compress.capture import capture_layer_inputs
from doctor.compress.collectors import InputNormCollector
from doctor.compress.hooks import forward_hooks
from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext, UndoLog
from doctor.patient import count_params
from doctor.results import LayerStat
from doctor.spec.modification import PruneSpec

log = logging.getLogger(__name__)


@dataclass
class Attn:
    """Where a block's attention projections are. `qkv` is GPT-2's fused projection (q, k, v stacked)."""

    module: nn.Module
    inputs: dict[str, str]  # attribute -> role: 'q', 'k', 'v' or 'qkv'
    out: str
    head_dim: int
    heads: int
    kv_heads: int


@dataclass
class Mlp:
    module: nn.Module
    inputs: list[str]
    out: str


def attention_of(block: nn.Module) -> Attn:
    attn = getattr(block, "self_attn", None)
    if attn is not None and all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
        hd = attn.head_dim
        heads, kv = linear_weight(attn.q_proj).shape[0] // hd, linear_weight(attn.k_proj).shape[0] // hd
        return Attn(attn, {"q_proj": "q", "k_proj": "k", "v_proj": "v"}, "o_proj", hd, heads, kv)
    attn = getattr(block, "attn", None)
    if attn is not None and hasattr(attn, "c_attn") and hasattr(attn, "c_proj"):
        return Attn(attn, {"c_attn": "qkv"}, "c_proj", attn.head_dim, attn.num_heads, attn.num_heads)
    raise ModificationError(f"structured pruning: unsupported attention layout in {type(block).__name__}")


def mlp_of(block: nn.Module) -> Mlp:
    mlp = getattr(block, "mlp", None)
    if mlp is not None and hasattr(mlp, "up_proj") and hasattr(mlp, "down_proj"):
        return Mlp(mlp, [n for n in ("gate_proj", "up_proj") if hasattr(mlp, n)], "down_proj")
    if mlp is not None and hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj"):
        return Mlp(mlp, ["c_fc"], "c_proj")
    raise ModificationError(f"structured pruning: unsupported MLP layout in {type(block).__name__}")


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """Row (or column) indices of the given heads in a projection laid out head after head."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def shrink_linear(module: nn.Module, dim: str, keep: torch.Tensor) -> nn.Module:
    """A new linear layer (same class) keeping output rows (`dim='out'`) or input columns (`dim='in'`)."""
    w = linear_weight(module).detach()  # (out, in)
    keep = keep.to(w.device)
    w = w[keep] if dim == "out" else w[:, keep]
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias = bias.detach()[keep] if dim == "out" else bias.detach()
    out_f, in_f = w.shape
    conv1d = type(module).__name__ == "Conv1D"
    with torch.device("meta"):  # shapes only: the real tensors are assigned below, no RNG is consumed
        new = type(module)(out_f, in_f) if conv1d else nn.Linear(in_f, out_f, bias=bias is not None)
    grad = module.weight.requires_grad
    new.weight = nn.Parameter((w.t() if conv1d else w).contiguous().clone(), requires_grad=grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.clone(), requires_grad=grad)
    return new.train(module.training)


def input_norms(model: nn.Module, modules: list[nn.Module], windows: torch.Tensor) -> list[torch.Tensor]:
    """Wanda's ||X_j||_2 over calibration tokens for each input feature of `modules[i]` (one per layer i)."""
    inputs = capture_layer_inputs(model, windows)
    norms = []
    for block, module in zip(decoder_layers(model), modules, strict=True):
        collector = InputNormCollector(linear_weight(module).shape[1], device=inputs.hidden[0].device)
        with forward_hooks([(module, lambda _m, args, c=collector: c.add(args[0]))], pre=True):
            outputs = inputs.run(block)
        norms.append(collector.norm.cpu())
        inputs = inputs.with_hidden(outputs)
    return norms


def _wanda_columns(out_module: nn.Module, norm: torch.Tensor) -> torch.Tensor:
    """Per input column of an output projection: sum_i |W_ij| * ||X_j||."""
    w = linear_weight(out_module).detach().float().cpu()
    return (w.abs() * norm.unsqueeze(0)).sum(0)  # (in,)


def _sq(module: nn.Module, dim: str) -> torch.Tensor:
    """Squared weight norm per output row (`dim='out'`) or per input column."""
    w = linear_weight(module).detach().float().cpu().pow(2)
    return w.sum(1) if dim == "out" else w.sum(0)


def head_scores(a: Attn, method: str, norm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance per query head and per KV head (the KV part is zero for 'wanda': it reads o's inputs only)."""
    hd = a.head_dim
    out = getattr(a.module, a.out)
    if method == "wanda":
        q = _wanda_columns(out, norm).reshape(a.heads, hd).sum(1)
        return q, torch.zeros(a.kv_heads)
    q = _sq(out, "in").reshape(a.heads, hd).sum(1)
    kv = torch.zeros(a.kv_heads)
    for attr, role in a.inputs.items():
        rows = _sq(getattr(a.module, attr), "out")
        if role == "qkv":  # fused (MHA): q, k, v blocks of heads * hd rows each
            q = q + rows.reshape(3, a.heads, hd).sum(dim=(0, 2))
        elif role == "q":
            q = q + rows.reshape(a.heads, hd).sum(1)
        else:
            kv = kv + rows.reshape(a.kv_heads, hd).sum(1)
    return q, kv


def _count(fraction: float, units: int, what: str) -> int:
    """Units to remove: the nearest whole number, at least one, never all."""
    if units < 2:
        raise ModificationError(f"structured pruning: only {units} {what} per layer, nothing can be removed")
    return min(max(1, round(fraction * units)), units - 1)


def choose_heads(a: Attn, q: torch.Tensor, kv: torch.Tensor, spec: PruneSpec) -> tuple[list[int], list[int]]:
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


def _prune_heads(a: Attn, keep_q: list[int], keep_kv: list[int], undo: UndoLog) -> None:
    hd, width = a.head_dim, a.heads * a.head_dim
    q_idx, kv_idx = head_rows(keep_q, hd), head_rows(keep_kv, hd)
    for attr, role in a.inputs.items():
        keep = {"q": q_idx, "k": kv_idx, "v": kv_idx}.get(role)
        if keep is None:  # fused q, k, v (MHA: kv heads are the query heads)
            keep = torch.cat([q_idx, width + q_idx, 2 * width + q_idx])
        undo.set_attr(a.module, attr, shrink_linear(getattr(a.module, attr), "out", keep))
    undo.set_attr(a.module, a.out, shrink_linear(getattr(a.module, a.out), "in", q_idx))
    new_attrs = {
        "num_heads": len(keep_q),
        "num_key_value_heads": len(keep_kv),
        "num_key_value_groups": len(keep_q) // len(keep_kv),
        "split_size": len(keep_q) * hd,  # GPT-2 splits its fused projection by this width
    }
    for name, value in new_attrs.items():
        if isinstance(getattr(a.module, name, None), int):
            undo.set_attr(a.module, name, value)


def _prune_channels(m: Mlp, keep: torch.Tensor, undo: UndoLog) -> None:
    for attr in m.inputs:
        undo.set_attr(m.module, attr, shrink_linear(getattr(m.module, attr), "out", keep))
    undo.set_attr(m.module, m.out, shrink_linear(getattr(m.module, m.out), "in", keep))
    if isinstance(getattr(m.module, "intermediate_size", None), int):
        undo.set_attr(m.module, "intermediate_size", int(keep.numel()))


def channel_scores(m: Mlp, method: str, norm: torch.Tensor | None) -> torch.Tensor:
    out = getattr(m.module, m.out)
    if method == "wanda":
        return _wanda_columns(out, norm)
    score = _sq(out, "in")
    for attr in m.inputs:
        score = score + _sq(getattr(m.module, attr), "out")
    return score


def _calibration_norms(spec: PruneSpec, ctx: ApplyContext, outs: list[nn.Module]) -> tuple[list, object]:
    if spec.method != "wanda":
        return [None] * len(outs), None
    cal = ctx.calibration(spec.calibration)
    ctx.progress("structured pruning: input norms")
    return input_norms(ctx.patient.model, outs, cal.windows), cal.info


def _update_config(model: nn.Module, spec: PruneSpec, attn: Attn | None, kept: int, undo: UndoLog) -> None:
    """The config describes every layer; the same number of units is removed per layer, so it stays true."""
    config = model.config
    if spec.structure == "channels":
        key = "intermediate_size" if hasattr(config, "intermediate_size") else "n_inner"
        undo.set_attr(config, key, kept)
        return
    kv = attn.kv_heads if spec.head_unit == "query" else attn.kv_heads * kept // attn.heads
    undo.set_attr(config, "num_attention_heads", kept)
    if getattr(config, "num_key_value_heads", None) is not None:
        undo.set_attr(config, "num_key_value_heads", kv)


def apply_structured(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    """Remove heads or MLP channels from every decoder layer; realized facts give params before and after."""
    model = ctx.patient.model
    blocks = list(decoder_layers(model))
    params_before = count_params(model)
    heads = spec.structure == "heads"
    parts = [attention_of(b) if heads else mlp_of(b) for b in blocks]
    norms, cal_info = _calibration_norms(spec, ctx, [getattr(p.module, p.out) for p in parts])
    stats, kept = [], 0
    for index, (part, norm) in enumerate(zip(parts, norms, strict=True)):
        if heads:
            keep_q, keep_kv = choose_heads(part, *head_scores(part, spec.method, norm), spec)
            _prune_heads(part, keep_q, keep_kv, ctx.undo)
            kept = len(keep_q)
            extra = {"heads_removed": part.heads - kept, "kv_heads_removed": part.kv_heads - len(keep_kv)}
        else:
            score = channel_scores(part, spec.method, norm)
            width = score.numel()
            keep = torch.topk(score, width - _count(spec.sparsity, width, "MLP channels")).indices.sort().values
            _prune_channels(part, keep, ctx.undo)
            kept = int(keep.numel())
            extra = {"channels_removed": width - kept}
        stats.append(LayerStat(layer=index, extra={k: float(v) for k, v in extra.items()}))
    _update_config(model, spec, parts[0] if heads else None, kept, ctx.undo)
    params_after = count_params(model)
    unit = "heads" if heads else "channels"
    removed = [int(s.extra[f"{unit}_removed"]) for s in stats]
    before = parts[0].heads if heads else removed[0] + kept
    realized = {
        "structure": spec.structure,
        f"{unit}_before": before,
        f"{unit}_removed_per_layer": removed,
        f"{unit}_removed_fraction": sum(removed) / (before * len(blocks)),
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    if heads:
        realized["kv_heads_removed_per_layer"] = [int(s.extra["kv_heads_removed"]) for s in stats]
    log.info("structured pruning removed %s %s per layer", removed, unit)
    return Applied(realized=realized, layers=stats, calibration=cal_info)
