"""What every architecture adapter answers: where a block's linears are, how heads and channels map onto their
rows, which module feeds which (AWQ), and which parameters are deliberately left alone.

Adapters recognise a decoder block by its structure (attribute names), not by `model_type`, so one adapter
serves every family that shares a layout (Llama, Mistral, Qwen2 and Gemma share one). Anything an adapter
cannot do raises `Unsupported`, which a checkup records as one "unsupported: reason" result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from doctor.errors import ModificationError


class Unsupported(ModificationError):
    """This architecture cannot do what a modification asks; the message starts with 'unsupported:'."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"unsupported: {reason}")


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (out_features, in_features); GPT-2's Conv1D stores the transpose."""
    return module.weight.t() if type(module).__name__ == "Conv1D" else module.weight


def all_linears(block: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer of a block, by name relative to the block, in definition order."""
    return {name: m for name, m in block.named_modules() if name and is_linear(m)}


def get(block: nn.Module, path: str) -> nn.Module | None:
    """A submodule by dotted path, or None."""
    module: nn.Module | None = block
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def has(block: nn.Module, *paths: str) -> bool:
    return all(get(block, p) is not None for p in paths)


def params_at(block: nn.Module, paths: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The parameters at dotted `paths` (module path, then attribute) that the block has."""
    found = {}
    for path in paths:
        owner, _, attr = path.rpartition(".")
        module = get(block, owner) if owner else block
        value = getattr(module, attr, None) if module is not None else None
        if isinstance(value, torch.Tensor):
            found[path] = value
    return found


SSM_ATTR = "doctor_ssm_params"  # set on a block while `ssm_params: quantize` makes its recurrence a target


@dataclass(frozen=True)
class ScaleGroup:
    """AWQ: linears sharing one input, the module producing it (`prev`), and the module whose output is compared.

    `shared`: when `prev` is a linear, how many of its LAST output rows feed the group (a fused producer such as
    q|k|v or gate|up); None means all of them.
    """

    prev: str
    inspect: str
    shared: int | None = None


@dataclass
class Attention:
    """Where one block's attention projections are and which head each of their rows serves.

    `inputs` maps each input projection (q, k, v, or a fused qkv) to two per-row tensors: the query head the row
    belongs to and the KV head it belongs to (-1 where neither). The output projection's input columns are laid
    out query head after query head.
    """

    module: nn.Module
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    out: str
    head_dim: int
    heads: int
    kv_heads: int


@dataclass
class Mlp:
    """One feed-forward unit: input projections with the intermediate channel of each row, and the output one."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]  # attribute -> channel index of each output row
    out: str
    width: int
    config_key: str | None = None  # the config field giving this unit's width (same for every layer)


def head_major(heads: int, head_dim: int) -> torch.Tensor:
    """Head of each row in a projection laid out head after head."""
    return torch.arange(heads * head_dim) // head_dim


def none(rows: int) -> torch.Tensor:
    return torch.full((rows,), -1, dtype=torch.long)


def separate_qkv(heads: int, kv_heads: int, head_dim: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Row maps of separate q_proj, k_proj and v_proj."""
    q, kv = head_major(heads, head_dim), head_major(kv_heads, head_dim)
    return {"q_proj": (q, none(len(q))), "k_proj": (none(len(kv)), kv), "v_proj": (none(len(kv)), kv)}


def stacked_qkv(heads: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row map of a fused projection stacking all q rows, then all k rows, then all v rows (GPT-2, Phi-3)."""
    q, kv = head_major(heads, head_dim), head_major(kv_heads, head_dim)
    return torch.cat([q, none(2 * len(kv))]), torch.cat([none(len(q)), kv, kv])


@dataclass
class Architecture:
    """A family layout. Subclasses override what their layout supports; the defaults say 'unsupported'."""

    name: str = "generic"
    # linear names (relative to the block) kept on purpose, with the reason shown in the report
    kept_linears: dict[str, str] = field(default_factory=dict)
    # output projections that write into the residual stream (identity expansion zeroes them)
    output_projections: tuple[str, ...] = ()

    def matches(self, block: nn.Module) -> bool:
        return True

    def linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """The linears a weight modification targets, in definition order, within the block's declared scope."""
        scope = getattr(block, "doctor_targets", None)  # set by a spec's `targets:` for one modification
        return {n: m for n, m in all_linears(block).items()
                if n not in self.kept_linears and (scope is None or n in scope)}

    def kept(self, block: nn.Module) -> dict[str, str]:
        """Parameters (beyond norms and embeddings) that stay as they are, with why."""
        rounded = {n.removesuffix(".weight") for n in self.ssm_params(block)} if getattr(block, SSM_ATTR, False) \
            else set()
        return {n: why for n, why in self.kept_linears.items() if get(block, n) is not None and n not in rounded}

    def ssm_params(self, block: nn.Module) -> dict[str, torch.Tensor]:
        """The state-space parameters `ssm_params: quantize` rounds (time-step projection, state matrix, skip
        coefficients, convolution), by dotted name; none for blocks without a state-space mixer."""
        return {}

    def ssm_targets(self, block: nn.Module) -> dict[str, torch.Tensor]:
        """The block's state-space parameters while `ssm_params: quantize` makes them targets, else none."""
        return self.ssm_params(block) if getattr(block, SSM_ATTR, False) else {}

    def module_type(self, name: str) -> str:
        """'attention', 'mlp', 'experts', 'shared_expert', 'ssm' or 'other' for a linear's name."""
        first = name.split(".")[0]
        if any(k in first for k in ("attn", "attention")):
            return "attention"
        if first in ("mlp", "fc1", "fc2", "feed_forward"):
            return "mlp"
        return "other"

    def groups(self, block: nn.Module) -> list[list[str]]:
        """True-sequential groups of the target linears (one group per linear if the order is unknown)."""
        return [[n] for n in self.linears(block)]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        """AWQ's producer of each group's input; groups without an exact producer are not scaled."""
        return {}

    def has_heads(self, block: nn.Module) -> bool:
        """Whether this block has attention heads (a hybrid model's Mamba layers have none)."""
        return True

    def attention(self, block: nn.Module) -> Attention:
        raise Unsupported(f"head pruning: attention layout of {type(block).__name__} ({self.name}) is not known")

    def mlps(self, block: nn.Module) -> list[Mlp]:
        raise Unsupported(f"channel pruning: MLP layout of {type(block).__name__} ({self.name}) is not known")

    def onnx_blocker(self, block: nn.Module) -> str | None:
        """Why this block cannot be exported to an ONNX graph taking any sequence length (None: it can)."""
        return None

    def router(self, block: nn.Module) -> nn.Module | None:
        """The module choosing experts for this block's tokens (None: not a mixture-of-experts block)."""
        return None

    def prepare(self, block: nn.Module, undo) -> None:
        """Make every target weight a linear layer for the modification's lifetime (fused experts); undoable."""

    def remap_layer_config(self, config, blocks: list[nn.Module], sources: list[int], undo) -> None:
        """Make per-layer config fields follow a new block list (`sources[p]`: old index of new block p).

        `layer_types` is remapped where it is stored; where it is a read-only property derived from other
        fields (Mamba: from the layer count) it follows by itself.
        """
        key = getattr(config, "attribute_map", {}).get("layer_types", "layer_types")
        prop = getattr(type(config), key, None)
        values = getattr(config, "layer_types", None)
        if isinstance(prop, property) and prop.fset is None:
            return
        if isinstance(values, list | tuple) and len(values) > max(sources):
            undo.set_attr(config, "layer_types", [values[s] for s in sources])
