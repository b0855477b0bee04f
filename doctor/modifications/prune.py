"""`kind: prune`: unstructured, N:M and structured pruning of the decoder blocks.

Magnitude pruning needs no data (reference: locuslab/wanda `prune_magnitude`: one threshold per matrix, or N:M
per row; masks in `doctor.compress.masks`); Wanda and SparseGPT run one calibrated pass over the decoder layers, and
structured pruning (heads, channels) ranks by an importance score (`doctor.compress`).
"""

from __future__ import annotations

import time

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight
from doctor.compress.masks import layer_mask, nm_mask, realized_sparsity
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.coverage import account, prepare_targets, snapshot
from doctor.modifications.kinds.prune import METHODS, STRUCTURED
from doctor.placement.offload import materialized
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
        applied.realized["true_sequential"] = spec.true_sequential
    if spec.structure == "nm":
        applied.realized["nm_tail"] = spec.nm_tail
    elif spec.structure == "unstructured" and spec.method != "wanda":
        applied.realized["ties"] = spec.ties
    applied.realized["target_sparsity"] = spec.target_sparsity
    account(applied, model, ctx.undo, before, f"prune {spec.method} {spec.structure}", STRUCTURE_TYPES.get(spec.structure))
    return applied


def apply_magnitude(spec: PruneSpec, ctx: ApplyContext) -> Applied:
    layers = []
    for index, block in enumerate(decoder_layers(ctx.patient.model)):
        start = time.perf_counter()
        with materialized(block, ctx.undo):
            for module in block_linears(block).values():
                ctx.undo.save_tensor(module.weight)
                w = linear_weight(module).detach()
                score = w.abs().float()  # |w| is exact in any float dtype
                if spec.structure == "nm":
                    mask = nm_mask(score, spec.n, spec.m, spec.nm_tail)
                else:
                    mask = layer_mask(score, spec.sparsity, spec.ties)
                w.masked_fill_(mask, 0.0)  # in place, through the (out, in) view: no copy of the matrix
        layers.append(LayerStat(layer=index, seconds=time.perf_counter() - start))
    return Applied(layers=layers)
