"""AWQ: activation-aware weight quantization by per-input-channel scaling before round-to-nearest.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", MLSys 2024 (reference code: mit-han-lab/llm-awq, `auto_scale.py`).

For each group of linears sharing one input (q/k/v after input_layernorm, o_proj after v_proj, gate/up after
post_attention_layernorm, down_proj after up_proj), the input channels are scaled by s = mean|x|^alpha
(normalised by sqrt(max s * min s)); alpha is searched on a grid over [0, 1] that includes alpha = 0, the
unscaled point, so the chosen loss is never above plain RTN's. The loss is the mean squared output error of the
module the group feeds (the attention block, the MLP, or the linear itself) with the scaled weights rounded,
on the recorded calibration inputs of that module. The inverse scale is folded into the preceding norm or
linear, so before rounding the network computes the same function; the scaled weights are then rounded.
With grouped-query attention, one value channel feeds several o_proj inputs (one per query head of its group),
so those inputs share one scale (the mean of their activation magnitudes); llm-awq skips this pair instead.
As in the references, the next layer is calibrated on the unquantized layer's outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from doctor.architectures import architecture_of
from doctor.architectures.base import Unsupported
from doctor.compress.adapters import decoder_layers, linear_weight, sequential_groups, set_linear_weight
from doctor.compress.capture import LayerInputs, layer_output, run_until_stopped, stop_forward
from doctor.compress.collectors import ActivationMagnitudeCollector
from doctor.compress.hooks import forward_hooks
from doctor.compress.quantizer import quantize_rtn
from doctor.compress.sequential import GroupJob, calibration_summary, in_features, run_sequential
from doctor.modifications.base import Applied, ApplyContext, UndoLog
from doctor.spec.modification import QuantizeSpec

log = logging.getLogger(__name__)


@dataclass
class ModuleCalls:
    """Recorded calls of one module over the calibration batches: arguments and outputs."""

    module: nn.Module
    calls: list[tuple[tuple, dict[str, Any], torch.Tensor]]

    def loss(self) -> float:
        """Mean squared difference between the module's current outputs and the recorded ones."""
        total = count = 0.0
        with torch.no_grad():
            for args, kwargs, expected in self.calls:
                out = layer_output(self.module(*args, **kwargs)).float()
                total += float((out - expected).pow(2).sum())
                count += expected.numel()
        return total / count


def record_calls(layer: nn.Module, inputs: LayerInputs, module: nn.Module) -> ModuleCalls:
    """Run the layer on its calibration inputs, recording each call of `module`; stop after it."""
    recorded: list[tuple[tuple, dict[str, Any], torch.Tensor]] = []
    pending: list[tuple[tuple, dict[str, Any]]] = []

    def before(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        pending.append((args, dict(kwargs)))

    def after(_m: nn.Module, _args: tuple, _kwargs: dict[str, Any], output: Any) -> None:
        args, kwargs = pending.pop()
        recorded.append((args, kwargs, layer_output(output).detach().float()))
        stop_forward()

    with (
        torch.no_grad(),
        forward_hooks([(module, before)], pre=True, with_kwargs=True),
        forward_hooks([(module, after)], with_kwargs=True),
    ):
        for i in range(len(inputs)):
            run_until_stopped(inputs.call, layer, i)
    return ModuleCalls(module, recorded)


def tie_scales(values: torch.Tensor, shared: int, head_dim: int) -> torch.Tensor:
    """Average per-input statistics over inputs fed by the same one of `shared` producer channels.

    Input channel c = head * head_dim + d of o_proj reads value channel (head // n_rep) * head_dim + d.
    Returns the `shared` producer-channel values.
    """
    n_rep = values.numel() // shared
    if n_rep == 1:
        return values
    return values.view(shared // head_dim, n_rep, head_dim).mean(1).reshape(-1)


def untie_scales(shared_values: torch.Tensor, inputs: int, head_dim: int) -> torch.Tensor:
    """Expand producer-channel scales to every input channel they feed (inverse of `tie_scales`' grouping)."""
    n_rep = inputs // shared_values.numel()
    if n_rep == 1:
        return shared_values
    kv = shared_values.numel() // head_dim
    return shared_values.view(kv, 1, head_dim).expand(kv, n_rep, head_dim).reshape(-1)


@dataclass
class SearchResult:
    scale: torch.Tensor  # per input channel of the group's linears
    alpha: float
    loss: float
    unscaled_loss: float  # the alpha = 0 point: plain RTN


def search_scale(
    calls: ModuleCalls,
    linears: dict[str, nn.Module],
    stat: torch.Tensor,
    spec: QuantizeSpec,
    expand=lambda s: s,
) -> SearchResult:
    """Grid search of alpha in [0, 1]; weights are restored exactly after each trial.

    `stat` is mean |x| per (producer) channel; `expand` maps producer-channel scales to the linears' inputs.
    """
    originals = {name: m.weight.detach().clone() for name, m in linears.items()}
    weights = {name: linear_weight(m).detach().float().clone() for name, m in linears.items()}
    best: SearchResult | None = None
    unscaled = float("nan")
    try:
        for alpha in torch.linspace(0, 1, spec.grid).tolist():
            s = stat.pow(alpha).clamp(min=1e-4)
            s = expand(s / (s.max() * s.min()).sqrt())
            for name, module in linears.items():
                w = weights[name] * s
                set_linear_weight(module, quantize_rtn(w, spec.bits, spec.group_size, spec.symmetric) / s)
            loss = calls.loss()
            if alpha == 0:
                unscaled = loss
            if best is None or loss < best.loss:
                best = SearchResult(s, alpha, loss, unscaled)
    finally:
        with torch.no_grad():
            for name, module in linears.items():
                module.weight.copy_(originals[name])
    best.unscaled_loss = unscaled
    return best


def fold_scale(prev: nn.Module, linears: dict[str, nn.Module], scale: torch.Tensor, shared: torch.Tensor,
               undo: UndoLog) -> None:
    """Multiply the linears' input columns by `scale`, divide the producer's outputs by `shared` (exact in fp)."""
    with torch.no_grad():
        for module in linears.values():
            undo.save_tensor(module.weight)
            set_linear_weight(module, linear_weight(module).detach().float() * scale)
        rows = shared.numel()
        if prev.weight.dim() == 1:  # a norm: y = weight * x_hat (+ bias)
            _divide(prev.weight, shared, undo)
        else:  # a linear: its last `rows` outputs feed the group (all of them unless fused qkv)
            undo.save_tensor(prev.weight)
            w = linear_weight(prev).detach().float()
            w[-rows:] /= shared.unsqueeze(1)
            set_linear_weight(prev, w)
        if getattr(prev, "bias", None) is not None:
            _divide(prev.bias[-rows:], shared, undo, parent=prev.bias)


def _divide(tensor: torch.Tensor, by: torch.Tensor, undo: UndoLog, parent: torch.Tensor | None = None) -> None:
    undo.save_tensor(parent if parent is not None else tensor)
    tensor.copy_((tensor.float() / by).to(tensor.dtype))


class AwqSolver:
    """Per group: record the inspected module's calls, search alpha, fold the chosen scale (fp, no rounding)."""

    def __init__(self, spec: QuantizeSpec, head_dim: int) -> None:
        self.spec = spec
        self.head_dim = head_dim
        self.scaled_groups = 0

    def __call__(self, job: GroupJob) -> dict[str, torch.Tensor]:
        group = architecture_of(job.layer).scale_groups(job.layer).get(tuple(job.names))
        if group is None or not job.stats:
            return {}
        prev, inspect = job.layer.get_submodule(group.prev), job.layer.get_submodule(group.inspect)
        linears = {n: job.modules[n] for n in job.stats}
        stat = next(iter(job.stats.values())).mean_abs
        shared = self._producer_channels(prev, stat.numel(), group.shared)
        if shared is None:
            log.info("AWQ: %s outputs cannot be matched to %s inputs; not scaled", group.prev, job.names)
            return {}
        tied = tie_scales(stat, shared, self.head_dim)
        result = search_scale(
            record_calls(job.layer, job.inputs, inspect), linears, tied, self.spec,
            expand=lambda s: untie_scales(s, stat.numel(), self.head_dim),
        )
        fold_scale(prev, linears, result.scale, tie_scales(result.scale, shared, self.head_dim), job.undo)
        job.extra[f"alpha:{group.inspect}"] = result.alpha
        job.extra[f"loss_vs_rtn:{group.inspect}"] = result.loss / result.unscaled_loss if result.unscaled_loss else 1.0
        self.scaled_groups += 1
        return {}

    def _producer_channels(self, prev: nn.Module, inputs: int, shared: int | None) -> int | None:
        """How many producer outputs feed the `inputs` channels (fewer with grouped-query attention).

        `shared`: the adapter's count of the producer's last rows feeding the group (a fused producer).
        """
        if prev.weight.dim() == 1:  # a norm
            unsupported = "Gemma" in type(prev).__name__  # (1 + weight) * x_hat: dividing weight is not exact
            return inputs if prev.weight.numel() == inputs and not unsupported else None
        rows = linear_weight(prev).shape[0] if shared is None else shared
        if rows == inputs:  # the producer's (last) rows feed the inputs one to one
            return inputs
        fits = rows < inputs and inputs % rows == 0 and rows % self.head_dim == 0
        return rows if fits else None


def apply_awq(spec: QuantizeSpec, ctx: ApplyContext, *, round_weights: bool = True) -> Applied:
    """AWQ over every decoder layer. `round_weights=False` applies the searched scales only (a check)."""
    calibration = ctx.calibration(spec.calibration)
    model = ctx.patient.model
    first = decoder_layers(model)[0]
    arch = architecture_of(first)
    if not any(tuple(group) in arch.scale_groups(first) for group in sequential_groups(first)):
        raise Unsupported(f"AWQ: which modules feed the linears of {type(first).__name__} ({arch.name}) is not known")
    solver = AwqSolver(spec, _head_dim(model.config))

    def make_collector(_name: str, module: nn.Module) -> ActivationMagnitudeCollector:
        return ActivationMagnitudeCollector(in_features(module), module.weight.device)

    def round_layer(job: GroupJob) -> dict[str, torch.Tensor]:
        if not round_weights:
            return {}
        return {n: quantize_rtn(job.weight(n), spec.bits, spec.group_size, spec.symmetric) for n in job.names}

    layers = run_sequential(
        model, calibration.windows, solver, ctx.progress, undo=ctx.undo, make_collector=make_collector,
        finish_layer=round_layer, propagate="original",
    )
    realized = {
        "method": "awq",
        "grid": spec.grid,
        "scaled_groups": solver.scaled_groups,
        **calibration_summary(layers, calibration.windows),
    }
    return Applied(realized=realized, layers=layers, calibration=calibration.info)


def _head_dim(config: Any) -> int:
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    return hidden // heads if hidden and heads else 1  # no heads (Mamba): no value channels to tie
