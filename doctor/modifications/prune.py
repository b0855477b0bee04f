"""`kind: prune`: unstructured, N:M and structured pruning of the decoder blocks.

Magnitude pruning needs no data; Wanda and SparseGPT run one calibrated pass over the decoder layers, and
structured pruning (heads, channels) ranks by an importance score (`doctor.compress`).
"""

from __future__ import annotations

import time

import torch

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight, set_linear_weight
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.coverage import account, prepare_targets, snapshot
from doctor.modifications.kinds.prune import METHODS, STRUCTURED
from doctor.plugins import resolve
from doctor.results import LayerStat
from doctor.spec.modification import PruneSpec

# structured pruning removes units of these module types only
STRUCTURE_TYPES = {"heads": {"attention"}, "channels": {"mlp", "experts", "shared_expert"}}


def apply(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    model = ctx.patient.model
    prepare_targets(model, ctx.undo, spec.targets)
    before = snapshot(model)
    structured = spec.structure in ("heads", "channels")
    applied = resolve(STRUCTURED if structured else METHODS[spec.method])(spec, ctx)
    if spec.structure in ("unstructured", "nm"):
        applied.realized.update(realized_sparsity(ctx.patient.model))
    applied.realized["target_sparsity"] = spec.target_sparsity
    account(applied, model, ctx.undo, before, f"prune {spec.method} {spec.structure}", STRUCTURE_TYPES.get(spec.structure))
    return applied


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where pruned: the `n` lowest scores in every group of `m` consecutive inputs of each row.

    A ragged tail (in_features not a multiple of m, e.g. 172 with m=8) has no complete group and stays dense,
    as N:M hardware formats cannot express it; realized sparsity is measured, so the report shows it.
    """
    rows, cols = score.shape
    full = cols - cols % m
    mask = torch.zeros_like(score, dtype=torch.bool)
    if full:
        groups = score[:, :full].reshape(rows, full // m, m)
        idx = torch.topk(groups, n, dim=-1, largest=False).indices
        mask[:, :full] = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, full)
    return mask


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where pruned: the lowest-scoring fraction of each output row (Wanda's per-output comparison group)."""
    k = int(score.shape[1] * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k:
        idx = torch.topk(score, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, True)
    return mask


def layer_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where pruned: the lowest-scoring fraction of the whole matrix (magnitude pruning per layer)."""
    k = int(score.numel() * sparsity)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k:
        idx = torch.topk(score.flatten(), k, largest=False).indices
        mask[idx] = True
    return mask.view_as(score)


def apply_magnitude(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    layers = []
    for index, block in enumerate(decoder_layers(ctx.patient.model)):
        start = time.perf_counter()
        for module in block_linears(block).values():
            ctx.undo.save_tensor(module.weight)
            w = linear_weight(module).detach().float()
            score = w.abs()
            mask = nm_mask(score, spec.n, spec.m) if spec.structure == "nm" else layer_mask(score, spec.sparsity)
            set_linear_weight(module, w.masked_fill(mask, 0.0))
        layers.append(LayerStat(layer=index, seconds=time.perf_counter() - start))
    return Applied(layers=layers)


def realized_sparsity(model: torch.nn.Module) -> dict:
    """Fraction of exact zeros in the decoder-block linear weights, overall and per layer (Wanda's check)."""
    zeros = total = 0
    per_layer = []
    for block in decoder_layers(model):
        z = t = 0
        for module in block_linears(block).values():
            w = linear_weight(module)
            z += int((w == 0).sum())
            t += w.numel()
        per_layer.append(z / t if t else 0.0)
        zeros, total = zeros + z, total + t
    return {"sparsity": zeros / total if total else 0.0, "sparsity_per_layer": per_layer}
