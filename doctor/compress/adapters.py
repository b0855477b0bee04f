"""Where the decoder blocks and their linear layers are, for the architectures we know.

Llama-like models (Llama, Mistral, Qwen2, Gemma, ...) keep blocks in `model.model.layers`; GPT-2 in
`model.transformer.h` with `Conv1D` layers. The generic fallback finds the ModuleList of length
`num_hidden_layers`.
"""

from __future__ import annotations

import torch
from torch import nn

# true-sequential order within a Llama block (GPTQ's --true-sequential): inputs of a later group depend on
# the already-modified outputs of an earlier one.
LLAMA_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


def layer_container(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the decoder-block ModuleList, and that list's attribute name."""
    for owner_path, attr in (("model", "layers"), ("transformer", "h"), ("model.decoder", "layers"), ("gpt_neox", "layers")):
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


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features); GPT-2's Conv1D stores the transpose."""
    return module.weight.t() if type(module).__name__ == "Conv1D" else module.weight


def set_linear_weight(module: nn.Module, weight: torch.Tensor) -> None:
    """Write an (out, in) weight back in place, in the module's own layout and dtype."""
    target = module.weight
    with torch.no_grad():
        target.copy_((weight.t() if type(module).__name__ == "Conv1D" else weight).to(target.dtype))


def block_linears(layer: nn.Module) -> dict[str, nn.Module]:
    """The linear layers of one block, by name relative to the block, in definition order."""
    return {name: m for name, m in layer.named_modules() if name and is_linear(m)}


def sequential_groups(layer: nn.Module) -> list[list[str]]:
    """Groups of a block's linear layers in true-sequential order (one group per layer if unknown)."""
    linears = block_linears(layer)
    if all(name in linears for group in LLAMA_GROUPS for name in group):
        groups = [list(g) for g in LLAMA_GROUPS]
        rest = [n for n in linears if not any(n in g for g in groups)]
        return groups + [[n] for n in rest]
    return [[name] for name in linears]
