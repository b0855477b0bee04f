"""Mamba blocks: a norm and a selective-state-space mixer (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj).

The projections in_proj, x_proj and out_proj are the targets. `dt_proj` is applied as a bare matrix product
inside the scan (no call a hook or a calibrated solver could see), and `A_log`, `D` and the depthwise conv1d are
the recurrence itself; they are kept in full precision and stated as kept, unless a quantize spec says
`ssm_params: quantize` (then their weights are rounded to nearest, see `doctor.modifications.ssm_params`). AWQ scales in_proj against the norm
that produces its input; there are no attention heads or MLP channels to prune.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from doctor.architectures.base import Architecture, Attention, Mlp, ScaleGroup, Unsupported, has, params_at

# transformers' torch path of the Mamba mixer loops over the sequence in Python; torch.export unrolls that loop
SCAN_NOT_EXPORTABLE = (
    "ONNX export: the Mamba mixer's scan is traced token by token, so the graph would only take the traced "
    "sequence length"
)
SSM_PARAMS = ("mixer.dt_proj.weight", "mixer.A_log", "mixer.D", "mixer.conv1d.weight")
KEPT = {
    "mixer.dt_proj": "time-step projection kept (used as a bare matrix inside the scan)",
    "mixer.A_log": "state matrix kept (recurrence)",
    "mixer.D": "skip coefficients kept (recurrence)",
    "mixer.conv1d": "depthwise convolution kept",
}


@dataclass
class Mamba(Architecture):
    name: str = "mamba"
    kept_linears: dict[str, str] = field(default_factory=lambda: dict(KEPT))
    output_projections: tuple[str, ...] = ("mixer.out_proj",)

    def matches(self, block: nn.Module) -> bool:
        return has(block, "mixer.in_proj", "mixer.out_proj", "mixer.A_log")

    def module_type(self, name: str) -> str:
        return "ssm" if name.startswith("mixer.") else super().module_type(name)

    def groups(self, block: nn.Module) -> list[list[str]]:
        return [["mixer.in_proj"], ["mixer.x_proj"], ["mixer.out_proj"]]

    def scale_groups(self, block: nn.Module) -> dict[tuple[str, ...], ScaleGroup]:
        return {("mixer.in_proj",): ScaleGroup("norm", "mixer")}

    def has_heads(self, block: nn.Module) -> bool:
        return False

    def ssm_params(self, block: nn.Module) -> dict[str, torch.Tensor]:
        return params_at(block, SSM_PARAMS)

    def onnx_blocker(self, block: nn.Module) -> str | None:
        return SCAN_NOT_EXPORTABLE

    def attention(self, block: nn.Module) -> Attention:
        raise Unsupported("head pruning: a Mamba block has no attention heads")

    def mlps(self, block: nn.Module) -> list[Mlp]:
        raise Unsupported("channel pruning: a Mamba block has no MLP channels")
