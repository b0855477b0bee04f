"""One calibrated pass over the decoder layers, as GPTQ, SparseGPT and Wanda run it.

Per decoder layer, per true-sequential group of linears (`adapters.sequential_groups`: q/k/v, then o, then
gate/up, then down), statistics of the group's inputs are collected with hooks on the layer's CURRENT weights
(so o_proj sees the outputs of the already-modified q/k/v), a solver turns them into new weights, and the new
weights are written through the undo log. The layer is then run again so the next layer is calibrated on the
outputs of the modified layer (`propagate="modified"`, as in IST-DASLab/gptq `llama_sequential` and
locuslab/wanda `prune_wanda`); AWQ's references feed the next layer the unmodified outputs instead
(`propagate="original"`). Only one layer's activations are alive at a time.

Each layer reports the relative reconstruction error ||W'X - WX||_F / ||WX||_F on its calibration inputs, pooled
over its linears (per linear in `extra`). With a Hessian collector it comes for free from
tr(dW H dW^T) / tr(W H W^T); otherwise it is measured with hooks during the re-run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight, sequential_groups, set_linear_weight
from doctor.compress.capture import LayerInputs, capture_layer_inputs, run_until_stopped, stop_forward
from doctor.compress.collectors import MIN_TOKENS, Collector, HessianCollector
from doctor.compress.hooks import forward_hooks
from doctor.compress.recording import ChangeLog
from doctor.placement.offload import materialized
from doctor.results import LayerStat

log = logging.getLogger(__name__)


@dataclass
class GroupJob:
    """What a solver sees for one group of linears in one layer."""

    layer_index: int
    layer: nn.Module
    names: list[str]
    modules: dict[str, nn.Module]
    stats: dict[str, Collector]  # read only (linears with one input share a collector; errors reuse Hessians)
    inputs: LayerInputs  # the layer's calibration inputs, to run sub-modules (AWQ's output search)
    undo: ChangeLog  # for anything the solver changes itself besides the returned weights
    extra: dict[str, float] = field(default_factory=dict)  # facts merged into the layer's LayerStat.extra

    def weight(self, name: str) -> torch.Tensor:
        """A float32 (out, in) copy of a linear's current weight."""
        return linear_weight(self.modules[name]).detach().float().clone()


SolveGroup = Callable[[GroupJob], dict[str, torch.Tensor]]  # new (out, in) weights by linear name
MakeCollector = Callable[[str, nn.Module], Collector | None]


def in_features(module: nn.Module) -> int:
    return linear_weight(module).shape[1]


def first_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def collect(
    layer: nn.Module, inputs: LayerInputs, modules: dict[str, nn.Module], make_collector: MakeCollector,
    outputs: list[torch.Tensor] | None = None,
) -> dict[str, Collector]:
    """Input statistics of `modules` over all batches; each forward stops once every module has seen its input.

    With `outputs`, every forward runs to the end instead and the layer's outputs are appended to it (the same
    run yields the statistics and the unmodified layer's outputs).
    """
    stats = {name: c for name, m in modules.items() if (c := make_collector(name, m)) is not None}
    if not stats and outputs is None:
        return stats
    seen: dict[str, torch.Tensor] = {}
    shares: dict[str, str] = {}  # linears fed the very same tensor (q/k/v, gate/up) share one collector
    first_batch = True

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            x = first_input(args, kwargs)
            source = next((n for n, t in seen.items() if t is x and type(stats[n]) is type(stats[name])), None)
            if first_batch and source is not None:
                shares[name] = source
            elif shares.get(name) != source:
                raise RuntimeError(f"{name} shared its input with {source} in one batch but not in another")
            if source is None:
                stats[name].add(x)
            seen[name] = x
            if len(seen) == len(stats) and outputs is None:
                stop_forward()

        return hook

    with torch.no_grad(), forward_hooks([(modules[n], hook_for(n)) for n in stats], pre=True, with_kwargs=True):
        for i in range(len(inputs)):
            seen.clear()
            if outputs is None:
                run_until_stopped(inputs.call, layer, i)
            else:
                outputs.append(inputs.call(layer, i))
            first_batch = False
    stats.update({name: stats[source] for name, source in shares.items()})
    return stats


def starved(stats: dict[str, Collector]) -> list[str]:
    """Linears that saw fewer than MIN_TOKENS calibration tokens; their statistics become uniform (stated)."""
    few = [name for name, c in stats.items() if c.tokens < MIN_TOKENS]
    for c in {id(stats[n]): stats[n] for n in few}.values():
        c.uniform()
    if few:
        log.info("fewer than %d calibration tokens reached %s; uniform statistics used", MIN_TOKENS, ", ".join(few))
    return few


class ErrorMeter:
    """Squared output error and squared reference output per linear, summed over calibration tokens.

    Without a Hessian the error costs two extra matmuls per linear; `stride` > 1 measures it on every
    stride-th position only (an unbiased estimate of the ratio at a fraction of the cost).
    """

    def __init__(self, stride: int = 1) -> None:
        self.stride = stride
        self.num: dict[str, float] = {}
        self.den: dict[str, float] = {}

    def add(self, name: str, num: float, den: float) -> None:
        self.num[name] = self.num.get(name, 0.0) + num
        self.den[name] = self.den.get(name, 0.0) + den

    def from_hessian(self, name: str, stats: HessianCollector, ref: torch.Tensor, new: torch.Tensor) -> None:
        """sum_x ||dW x||^2 = tokens / 2 * tr(dW H dW^T) for H = mean 2 x x^T."""
        delta = new.float() - ref
        half = stats.tokens / 2
        self.add(name, half * float((delta @ stats.H * delta).sum()), half * float((ref @ stats.H * ref).sum()))

    def hook(self, name: str, ref: torch.Tensor, new: torch.Tensor) -> Callable[..., None]:
        delta = new.float() - ref

        def measure(_module: nn.Module, args: tuple, kwargs: dict[str, Any], _output: Any) -> None:
            x = first_input(args, kwargs).float()
            if self.stride > 1 and x.dim() >= 2:
                x = x[..., :: self.stride, :]
            self.add(name, float(F.linear(x, delta).pow(2).sum()), float(F.linear(x, ref).pow(2).sum()))

        return measure

    def stat(self, index: int, seconds: float, extra: dict[str, float]) -> LayerStat:
        per_linear = {n: (self.num[n] / self.den[n]) ** 0.5 if self.den[n] > 0 else 0.0 for n in self.num}
        den = sum(self.den.values())
        pooled = (sum(self.num.values()) / den) ** 0.5 if den > 0 else None
        return LayerStat(layer=index, rel_error=pooled, seconds=seconds, extra={**per_linear, **extra})


@dataclass
class _LayerState:
    index: int
    layer: nn.Module
    undo: ChangeLog
    meter: ErrorMeter
    pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # name -> (ref, new)
    extra: dict[str, float] = field(default_factory=dict)

    def write(self, modules: dict[str, nn.Module], weights: dict[str, torch.Tensor], stats: dict[str, Collector]):
        for name, new in weights.items():
            module = modules[name]
            ref = linear_weight(module).detach().float().clone()
            self.undo.save_tensor(module.weight)
            set_linear_weight(module, new)
            written = linear_weight(module).detach().float()
            if isinstance(stats.get(name), HessianCollector):
                self.meter.from_hessian(name, stats[name], ref, written)
            else:
                self.pending[name] = (ref, written.clone())


def run_sequential(
    model: nn.Module,
    windows: torch.Tensor,
    solve_group: SolveGroup,
    progress: Callable[[str], None] | None = None,
    *,
    undo: ChangeLog,
    make_collector: MakeCollector,
    finish_layer: SolveGroup | None = None,
    propagate: Literal["modified", "original"] = "modified",
    measure_error: bool = True,
    batch_tokens: int = 4096,
    first_batch_tokens: int | None = None,
    groups: Callable[[nn.Module], list[list[str]]] = sequential_groups,
    error_stride: int = 1,
) -> list[LayerStat]:
    """Calibrate and modify every decoder layer in order; returns one LayerStat per layer.

    `solve_group(job)` returns new (out, in) weights for some of `job.names` (written here, through `undo`);
    `finish_layer(job)`, if given, runs once per layer after all groups with every linear of the layer and no
    statistics (AWQ rounds there). `windows` are (samples, seq_len) token ids. `groups(layer)` orders the
    linears (default: true-sequential; one group of all linears collects the whole block at once).
    `error_stride` thins the positions on which errors without a Hessian are measured. `first_batch_tokens`
    makes the first calibration batch the leading windows holding that many tokens (AWQ's `search_tokens`).
    """
    progress = progress or (lambda message: None)
    inputs = capture_layer_inputs(model, windows, batch_tokens, first_batch_tokens)
    layers = decoder_layers(model)
    results = []
    for index, layer in enumerate(layers):
        with materialized(layer, undo):  # an offloaded layer's weights come on here, one layer at a time
            start = time.perf_counter()
            state = _LayerState(index, layer, undo, ErrorMeter(error_stride))
            original: list[torch.Tensor] | None = [] if propagate == "original" else None
            linears = block_linears(layer)
            for number, names in enumerate(groups(layer)):
                modules = {n: linears[n] for n in names}
                # the first group's statistics come from the unmodified layer: that run's outputs are the original ones
                stats = collect(layer, inputs, modules, make_collector, outputs=original if number == 0 else None)
                if few := starved(stats):
                    state.extra["uniform_fallback_linears"] = state.extra.get("uniform_fallback_linears", 0) + len(few)
                job = GroupJob(index, layer, list(names), modules, stats, inputs, undo, state.extra)
                state.write(modules, solve_group(job), stats)
            if original is not None and len(original) != len(inputs):  # no group ran: nothing was modified yet
                original = inputs.run(layer)
            if finish_layer is not None:
                job = GroupJob(index, layer, list(linears), linears, {}, inputs, undo, state.extra)
                state.write(linears, finish_layer(job), {})
            outputs = _rerun(state, linears, inputs, measure_error, need_outputs=original is None)
            inputs = inputs.with_hidden(original if original is not None else outputs)
            results.append(state.meter.stat(index, time.perf_counter() - start, state.extra))
            progress(f"layer {index + 1}/{len(layers)}")
    return results


def _rerun(
    state: _LayerState, linears: dict[str, nn.Module], inputs: LayerInputs, measure_error: bool, need_outputs: bool
) -> list[torch.Tensor] | None:
    """Run the modified layer: its outputs feed the next layer; hooks measure errors not known from Hessians."""
    hooks = [(linears[n], state.meter.hook(n, ref, new)) for n, (ref, new) in state.pending.items()]
    if not measure_error:
        hooks = []
    if not hooks and not need_outputs:
        return None
    with forward_hooks(hooks, with_kwargs=True):
        return inputs.run(state.layer)


def calibration_summary(layers: list[LayerStat], calibration_windows: torch.Tensor) -> dict[str, Any]:
    """Realized facts every calibrated method reports: tokens used and the per-layer error summary."""
    errors = [s.rel_error for s in layers if s.rel_error is not None]
    return {
        "calibration_tokens": int(calibration_windows.numel()),
        "calib_rel_error_mean": sum(errors) / len(errors) if errors else None,
        "calib_rel_error_max": max(errors) if errors else None,
    }
