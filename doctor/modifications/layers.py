"""`kind: remove_layers` and `kind: expand_layers`: whole decoder blocks taken out or inserted.

Removal ranks blocks by Block Influence, BI_i = 1 - E_t[cos(x_i,t, x_i+1,t)] over calibration tokens, and drops
the least influential (Men et al., 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You
Expect", arXiv:2403.03853), or drops blocks by position. Expansion inserts copies of blocks; the 'identity'
init zeroes each copy's output projections so the block adds nothing to the residual stream and the function is
unchanged (Wu et al., 2024, "LLaMA Pro: Progressive LLaMA with Block Expansion", arXiv:2401.02415, Sec. 3).

Both replace the block ModuleList through the undo log, so restore puts the original list (and each block's
`layer_idx`, the config's layer count and `layer_types`) back without reloading anything.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from doctor.architectures import Unsupported, architecture_of
from doctor.architectures.base import get
from doctor.compress.adapters import decoder_layers, layer_container
from doctor.compress.capture import capture_layer_inputs
from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext, UndoLog
from doctor.patient import count_params
from doctor.results import LayerStat
from doctor.spec.modification import ExpandLayersSpec, RemoveLayersSpec

log = logging.getLogger(__name__)

def block_influence(model: nn.Module, windows: torch.Tensor) -> list[float]:
    """BI of every decoder block: 1 - mean cosine similarity of its input and output hidden states per token.

    Layer by layer on captured inputs, so only one layer's activations are alive at a time.
    """
    inputs = capture_layer_inputs(model, windows)
    influence = []
    for block in decoder_layers(model):
        outputs = inputs.run(block)
        cos = sum(
            float(torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).sum())  # over (batch, seq)
            for x, y in zip(inputs.hidden, outputs, strict=True)
        )
        influence.append(1.0 - cos / inputs.tokens)
        inputs = inputs.with_hidden(outputs)
    return influence


def _set_layer_indices(blocks: nn.ModuleList, undo: UndoLog) -> None:
    """Each block's attention keeps its KV-cache slot by `layer_idx`; renumber after a change of order."""
    for position, block in enumerate(blocks):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int) and module.layer_idx != position:
                undo.set_attr(module, "layer_idx", position)


def _replace_blocks(model: nn.Module, new_blocks: list[nn.Module], sources: list[int], undo: UndoLog) -> None:
    """Install `new_blocks` (new position -> source index in `sources`) and update config and layer indices."""
    owner, attr = layer_container(model)
    new_list = nn.ModuleList(new_blocks)
    undo.set_attr(owner, attr, new_list)
    config = model.config
    undo.set_attr(config, "num_hidden_layers", len(new_blocks))
    architecture_of(new_blocks[0]).remap_layer_config(config, new_blocks, sources, undo)
    _set_layer_indices(new_list, undo)


def _removal_indices(spec: RemoveLayersSpec, total: int, influence: list[float] | None) -> list[int]:
    if spec.by == "indices":
        indices = sorted(set(spec.indices or []))
        bad = [i for i in indices if not -total <= i < total]
        if bad:
            raise ModificationError(f"remove_layers.indices: {bad} out of range for {total} layers")
        indices = sorted({i % total for i in indices})
    else:
        count = spec.count if spec.count is not None else max(1, round(spec.fraction * total))
        if spec.by == "first":
            indices = list(range(count))
        elif spec.by == "last":
            indices = list(range(total - count, total))
        else:
            indices = sorted(sorted(range(total), key=lambda i: influence[i])[:count])
    if len(indices) >= total:
        raise ModificationError(f"remove_layers: removing {len(indices)} of {total} layers leaves none")
    return indices


def apply_remove(spec: RemoveLayersSpec, ctx: ApplyContext) -> Applied:
    """Drop whole decoder blocks; realized facts give the removed indices and every block's influence."""
    model = ctx.patient.model
    blocks = decoder_layers(model)
    total = len(blocks)
    influence = calibration = None
    if spec.by == "block_influence":
        cal = ctx.calibration(spec.calibration)
        calibration = cal.info
        ctx.progress("block influence")
        influence = block_influence(model, cal.windows)
    removed = _removal_indices(spec, total, influence)
    params_before = count_params(model)
    kept = [i for i in range(total) if i not in removed]
    _replace_blocks(model, [blocks[i] for i in kept], kept, ctx.undo)
    params_after = count_params(model)
    log.info("removed decoder layers %s of %d", removed, total)
    realized = {
        "layers_removed": removed,
        "layers_before": total,
        "layers_after": len(kept),
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    layers = []
    if influence is not None:
        realized["block_influence"] = influence
        layers = [LayerStat(layer=i, extra={"block_influence": bi}) for i, bi in enumerate(influence)]
    return Applied(realized=realized, layers=layers, calibration=calibration)


def insertion_points(total: int, count: int, placement: str) -> list[int]:
    """Source block index after which each copy goes: spread evenly (one per group of blocks) or at the end."""
    if placement == "end":
        return [total - 1] * count
    return [max(0, (k + 1) * total // count - 1) for k in range(count)]


def _zero_outputs(block: nn.Module) -> list[str]:
    """Zero the output projections (weight and bias) so the block's residual contributions are exactly zero.

    Raises Unsupported unless the adapter names them: a copy that is not an identity must not pass for one.
    """
    arch = architecture_of(block)
    found = {path: get(block, path) for path in arch.output_projections}
    found = {path: target for path, target in found.items() if target is not None}
    if not found:
        raise Unsupported(
            f"expand_layers: the output projections of {type(block).__name__} ({arch.name}) are not known for "
            f"identity init; use init: copy"
        )
    with torch.no_grad():
        for target in found.values():
            if isinstance(target, torch.Tensor):  # a fused parameter (all experts' down projections)
                target.zero_()
                continue
            target.weight.zero_()
            if getattr(target, "bias", None) is not None:
                target.bias.zero_()
    return list(found)


def apply_expand(spec: ExpandLayersSpec, ctx: ApplyContext) -> Applied:
    """Insert `count` copies of decoder blocks, identity-initialised (LLaMA Pro) or as plain copies."""
    model = ctx.patient.model
    blocks = decoder_layers(model)
    total = len(blocks)
    points = insertion_points(total, spec.count, spec.placement)
    params_before = count_params(model)
    new_blocks: list[nn.Module] = []
    sources: list[int] = []
    inserted: list[int] = []
    for i, block in enumerate(blocks):
        new_blocks.append(block)
        sources.append(i)
        for _ in range(points.count(i)):
            twin = copy.deepcopy(block)
            if spec.init == "identity":
                _zero_outputs(twin)
            inserted.append(len(new_blocks))
            new_blocks.append(twin)
            sources.append(i)
    _replace_blocks(model, new_blocks, sources, ctx.undo)
    params_after = count_params(model)
    realized = {
        "layers_before": total,
        "layers_after": len(new_blocks),
        "inserted_at": inserted,
        "copied_from": [sources[p] for p in inserted],
        "init": spec.init,
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before,
    }
    return Applied(realized=realized)
