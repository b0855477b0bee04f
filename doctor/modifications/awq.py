"""AWQ as a modification: the spec's options and calibration applied over every decoder layer through the undo
log. The searches (scale, clip) are tensor math in `doctor.compress.awq`; see there for the method and its
reference."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from doctor.architectures import architecture_of
from doctor.architectures.base import Unsupported
from doctor.compress.adapters import block_linears, decoder_layers, sequential_groups
from doctor.compress.awq import AwqInputs, AwqSettings, AwqSolver
from doctor.compress.capture import batches
from doctor.compress.sequential import GroupJob, calibration_summary, in_features, run_sequential
from doctor.data.calibration import MethodWindows
from doctor.modifications.base import Applied, ApplyContext
from doctor.spec.modification import QuantizeSpec

BATCH_TOKENS = 4096  # calibration tokens per layer run (run_sequential's default)
# llm-awq's `run_awq` calibrates on blocks of 512 tokens (128 of them): the literature preset draws 128 windows of
# 512. The scale search runs the attention block and the MLP once per grid ratio over every calibration token, so
# its cost is about grid x 1.3 decoder-layer passes per calibration token: the fast default of 8 windows keeps an
# AWQ checkup within about 3 passes of an evaluation of 32 x 512 tokens or more (see docs/methods.md for how
# little the scales and perplexity move between 8 and 128 windows).
CALIBRATION = MethodWindows(seq_len=512, samples=8)
ERROR_STRIDE = 8  # the per-layer output error is measured on every 8th position (as Wanda's): it is a report only


def settings(spec: QuantizeSpec) -> AwqSettings:
    return AwqSettings(bits=spec.bits, group_size=spec.group_size, symmetric=spec.symmetric, grid=spec.grid,
                       auto_clip=spec.auto_clip, gqa_scales=spec.gqa_scales, search_tokens=spec.search_tokens)


def apply_awq(spec: QuantizeSpec, ctx: ApplyContext, *, round_weights: bool = True) -> Applied:
    """AWQ over every decoder layer. `round_weights=False` applies the searched scales only (a check)."""
    calibration = ctx.calibration(spec.calibration, method=CALIBRATION)
    model = ctx.patient.model
    first = decoder_layers(model)[0]
    arch = architecture_of(first)
    if not any(tuple(group) in arch.scale_groups(first) for group in sequential_groups(first)):
        raise Unsupported(f"AWQ: which modules feed the linears of {type(first).__name__} ({arch.name}) is not known")
    solver = AwqSolver(settings(spec), _head_dim(model.config))

    def make_collector(_name: str, module: nn.Module) -> AwqInputs:
        return AwqInputs(in_features(module), module.weight.device)

    def solve(job: GroupJob) -> dict[str, torch.Tensor]:
        weights = solver(job)
        return weights if round_weights else {}

    layers = run_sequential(
        model, calibration.windows, solve, ctx.progress, undo=ctx.undo, make_collector=make_collector,
        propagate="original", groups=lambda layer: [list(block_linears(layer))],
        first_batch_tokens=spec.search_tokens,  # the scale search's windows form the first batch
        error_stride=ERROR_STRIDE,
    )
    realized = {
        "method": "awq",
        "grid": spec.grid,
        "auto_clip": spec.auto_clip,
        "gqa_scales": spec.gqa_scales,
        "search_tokens": search_tokens(spec.search_tokens, calibration.windows),
        "scaled_groups": solver.scaled_groups,
        "calib_error_stride": ERROR_STRIDE,
        "clipped_linears": solver.clipped_linears,
        **calibration_summary(layers, calibration.windows),
    }
    return Applied(realized=realized, layers=layers, calibration=calibration.info)


def search_tokens(requested: int | None, windows: torch.Tensor) -> int:
    """Calibration tokens the scale search measures its loss on: the first batch's whole windows, or all."""
    if requested is None:
        return int(windows.numel())
    return int(batches(windows, BATCH_TOKENS, requested)[0].numel())


def _head_dim(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    return hidden // heads if hidden and heads else 1  # no heads (Mamba): no value channels to tie
