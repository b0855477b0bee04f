"""`ssm_params: quantize`: a state-space mixer's own parameters rounded along with its projections.

The projections of a Mamba mixer (in_proj, x_proj, out_proj) are linears and go through the quantize method
(RTN, GPTQ or AWQ). The rest of the mixer is kept by default; with `ssm_params: quantize` these become targets
too and are rounded to nearest (RTN) at the spec's bits, group size and symmetry, whatever the method:

- `dt_proj.weight`: a linear, but the mixer applies it as a bare matrix product inside the scan, so no
  calibration hook sees its input and GPTQ's Hessian or AWQ's activation scales cannot be formed for it;
- `A_log` (channels x state) and `D` (one value per channel): the recurrence's state matrix (in log space) and
  skip coefficients, rounded per channel row (`D` as one row);
- `conv1d.weight`: the depthwise convolution, each channel's kernel one row.

Biases (`dt_proj.bias`, Bamba's `dt_bias`, the convolution's bias) stay in full precision like every linear's
bias. The rounding runs after the method, so GPTQ and AWQ calibrate on the mixer as it was. Coverage then counts
these parameters as `ssm` targets, and the report no longer states them as kept.
"""

from __future__ import annotations

import torch
from torch import nn

from doctor.architectures import Unsupported, architecture_of
from doctor.architectures.base import SSM_ATTR
from doctor.compress.adapters import decoder_layers
from doctor.compress.quantizer import quantize_rtn
from doctor.errors import ModificationError
from doctor.modifications.base import UndoLog
from doctor.modifications.coverage import SCOPE_ATTR
from doctor.placement.offload import materialized


def as_rows(param: torch.Tensor) -> torch.Tensor:
    """A parameter as the (rows, columns) matrix it is rounded as: per output channel; a vector is one row."""
    return param.detach().reshape(1, -1) if param.dim() == 1 else param.detach().reshape(param.shape[0], -1)


def include_ssm_params(model: nn.Module, undo: UndoLog) -> None:
    """Make every in-scope block's state-space parameters targets (undoable); a model without any is refused."""
    found = included = 0
    for block in decoder_layers(model):
        arch = architecture_of(block)
        if not arch.ssm_params(block):
            continue
        found += 1
        scope = getattr(block, SCOPE_ATTR, None)  # `targets:` narrows: only blocks whose ssm linears are in scope
        if scope is None or any(arch.module_type(n) == "ssm" for n in scope):
            undo.set_attr(block, SSM_ATTR, True)
            included += 1
    if not found:
        raise Unsupported(f"ssm_params: quantize: {type(model).__name__} has no state-space parameters")
    if not included:
        raise ModificationError("ssm_params: quantize, but `targets:` leaves no state-space layer in scope")


def round_ssm_params(model: nn.Module, bits: int, group_size: int | None, symmetric: bool, undo: UndoLog) -> list[str]:
    """Round every target state-space parameter to nearest in place (saved first); returns their names."""
    names = []
    for index, block in enumerate(decoder_layers(model)):
        with materialized(block, undo):  # an offloaded block's weights are on hand only inside
            for name, param in architecture_of(block).ssm_targets(block).items():
                undo.save_tensor(param)
                with torch.no_grad():
                    param.copy_(quantize_rtn(as_rows(param), bits, group_size, symmetric).reshape(param.shape))
                names.append(f"{index}.{name}")
    return names
