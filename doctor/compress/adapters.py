"""Where the decoder blocks and their target linear layers are.

Llama-like models keep blocks in `model.model.layers`, GPT-2 and Falcon in `model.transformer.h`, OPT in
`model.model.decoder.layers`, GPT-NeoX in `model.gpt_neox.layers`; the generic fallback finds the ModuleList
of length `num_hidden_layers` (Mamba's `backbone.layers`). Which linears of a block are targets, and in which
true-sequential order, is the block's architecture adapter's answer (`doctor.architectures`).
"""

from __future__ import annotations

import torch
from torch import nn

from doctor.architectures import architecture_of
from doctor.architectures.base import is_linear, linear_weight

__all__ = ["block_linears", "decoder_layers", "is_linear", "layer_container", "linear_weight", "sequential_groups",
           "set_linear_weight"]


def layer_container(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder-block ModuleList, and that list's attribute name."""
    for owner_path, attr in (("model", "layers"), ("transformer", "h"), ("model.decoder", "layers"), ("gpt_neox", "layers"),
                            ("backbone", "layers")):
        owner = model
        for part in owner_path.split("."):
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is not None and isinstance(getattr(owner, attr, None), nn.ModuleList):
            return owner, attr
    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            owner_name, _, attr = name.rpartition(".")
            return model.get_submodule(owner_name), attr
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    owner, attr = layer_container(model)
    return getattr(owner, attr)


def set_linear_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write an (out, in) weight back in place, in the module's own layout and dtype."""
    target = module.weight
    with torch.no_grad():
        target.copy_((weight.t() if type(module).__name__ == "Conv1D" else weight).to(target.dtype))


def block_linears(layer: nn.Module) -> dict[str, nn.Module]:
    """The linear layers a weight modification targets in one block (its architecture adapter decides)."""
    return architecture_of(layer).linears(layer)


def sequential_groups(layer: nn.Module) -> list[list[str]]:
    """Groups of a block's target linears in true-sequential order (one group per linear if unknown)."""
    linears = block_linears(layer)
    groups = [[n for n in group if n in linears] for group in architecture_of(layer).groups(layer)]
    groups = [g for g in groups if g]
    rest = [n for n in linears if not any(n in g for g in groups)]
    return groups + [[n] for n in rest]
