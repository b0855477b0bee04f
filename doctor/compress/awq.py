"""AWQ: activation-aware weight quantization by per-input-channel scaling and weight clipping before rounding.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", MLSys 2024 (reference code: mit-han-lab/llm-awq, `pre_quant.run_awq`,
`auto_scale.py`, `auto_clip.py`, `quantizer.pseudo_quantize_tensor`).

Per decoder layer, as `run_awq`: the inputs of every linear are taken from one run of the unmodified layer.
1. Scale search (`auto_scale_block`), for each group of linears sharing one input (q/k/v after input_layernorm,
   o_proj after v_proj, gate/up after post_attention_layernorm, down_proj after up_proj), on the layer's
   original weights: the input channels are scaled by s = mean|x|^ratio, normalised by sqrt(max s * min s), for
   ratio = i / grid, i = 0..grid-1 (0, 0.05, ..., 0.95 with the default grid of 20); the loss is the mean squared
   output error of the module the group feeds (the attention block, the MLP, or the linear itself) with the
   scaled weights rounded. Ratio 0 is the unscaled point, so the chosen loss is never above plain rounding's.
2. The chosen scales are folded (inverse into the preceding norm or linear: the same function before rounding),
   and the recorded inputs divided by them.
3. Clip search (`auto_clip_block`, `auto_clip: true`), for every linear but q/k: per output row and group, the
   weights are clamped to +-max|w| * (1 - i / 20), i = 0..9, and the value with the least mean squared output
   error on every (tokens // 512)-th calibration token kept.
4. Every linear is rounded with llm-awq's grid (`quantizer.awq_quantize`: the group's own min/max range).
The next layer is calibrated on the unmodified layer's outputs, as upstream.

Measured on stories260k against llm-awq with the same calibration windows (docs/methods.md): scale search alone
(w3 per channel) 5e-9 relative perplexity; with clipping at group size 4, 1.7e-5 (w4) and 3.1e-4 (w3). Given the
same layer inputs, ratios and clip bounds are identical; the activation means here are accumulated batch by batch
(upstream keeps every calibration activation for one mean), and that rounding flips a few decisions. Not reproduced:
upstream's default GPU/fp16 arithmetic (this runs in the model's dtype, float32 on CPU), its batching over
output rows in the clip search (row-independent, so only rounding differs), and its failures: group sizes that
do not divide in_features (here a final partial group gets its own grid), the clip search per channel
(upstream asserts; here the group is the row), fewer than 512 calibration tokens (here every token is used).
Options: `gqa_scales: skip` (default, as upstream) leaves o_proj unscaled when grouped-query attention makes
v_proj narrower than o_proj's input; `tied` scales it anyway, the query heads that read one value head sharing
one scale (the mean of their activation magnitudes). `auto_clip: false` is upstream's `mse_range=False`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from doctor.architectures import architecture_of
from doctor.compress.adapters import linear_weight, sequential_groups, set_linear_weight
from doctor.compress.capture import LayerInputs, layer_output, run_until_stopped, stop_forward
from doctor.compress.collectors import Collector
from doctor.compress.hooks import forward_hooks
from doctor.compress.quantizer import awq_quantize
from doctor.compress.recording import ChangeLog
from doctor.compress.sequential import GroupJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwqSettings:
    """The options the searches read (the spec's fields of the same names)."""

    bits: int
    group_size: int | None
    symmetric: bool = False
    grid: int = 20
    auto_clip: bool = True
    gqa_scales: str = "skip"


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
    spec: AwqSettings,
    expand=lambda s: s,
) -> SearchResult:
    """Grid search of the exponent over i / grid, i = 0..grid-1; weights are restored exactly after each trial.

    `stat` is mean |x| per (producer) channel; `expand` maps producer-channel scales to the linears' inputs.
    """
    originals = {name: m.weight.detach().clone() for name, m in linears.items()}
    weights = {name: linear_weight(m).detach().float().clone() for name, m in linears.items()}
    best: SearchResult | None = None
    unscaled = float("nan")
    try:
        for alpha in (i / spec.grid for i in range(spec.grid)):
            s = stat.pow(alpha).clamp(min=1e-4)
            s = expand(s / (s.max() * s.min()).sqrt())
            for name, module in linears.items():
                w = weights[name] * s
                set_linear_weight(module, awq_quantize(w, spec.bits, spec.group_size, spec.symmetric) / s)
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
               undo: ChangeLog) -> None:
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


def _divide(tensor: torch.Tensor, by: torch.Tensor, undo: ChangeLog, parent: torch.Tensor | None = None) -> None:
    undo.save_tensor(parent if parent is not None else tensor)
    tensor.copy_((tensor.float() / by).to(tensor.dtype))


class AwqInputs(Collector):
    """Mean |x| per input feature (`get_act_scale`) and every `step`-th input token, kept for the clip search."""

    def __init__(self, features: int, device: torch.device | str, step: int) -> None:
        super().__init__(features, device)
        self.step = step
        self.mean_abs = torch.zeros(features, dtype=torch.float32, device=self.device)
        self.chunks: list[torch.Tensor] = []

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        if not rows.shape[0]:
            return
        first = (-self.tokens) % self.step  # global token index 0, step, 2 step, ... as upstream's [0::step]
        keep = self._mix(rows.shape[0])
        self.mean_abs.mul_(keep).add_(rows.abs().sum(0) / self.tokens)
        self.chunks.append(rows[first :: self.step].clone())

    @property
    def sampled(self) -> torch.Tensor:
        return torch.cat(self.chunks)


CLIP_SKIPPED = ("q_", "k_", "query", "key", "Wqkv")  # upstream: "due to qk bmm, it is hard to clip precisely"


def clip_search(w: torch.Tensor, x: torch.Tensor, spec: AwqSettings, grid: int = 20, max_shrink: float = 0.5,
                rows_per_batch: int = 64) -> torch.Tensor:
    """Per row and group of `w` (out, in), the clamp bound with the least squared error of x @ group on `x`.

    Returns (out, groups, 1) bounds; upstream's `auto_clip_layer` with its grid of 20 and shrink of at most 50%.
    """
    out_features, cols = w.shape
    g = cols if spec.group_size is None or spec.group_size >= cols else spec.group_size
    full = cols // g * g
    best_all = []
    parts = [(slice(0, full), g)] + ([(slice(full, cols), cols - full)] if full < cols else [])
    for cols_slice, size in parts:
        xs = x[:, cols_slice].reshape(1, x.shape[0], -1, size)  # 1, tokens, groups, size
        bounds = []
        for r in range(0, out_features, rows_per_batch):
            ws = w[r : r + rows_per_batch, cols_slice].reshape(-1, 1, xs.shape[2], size)  # rows, 1, groups, size
            org_max = ws.abs().amax(dim=-1, keepdim=True)
            best, least = org_max.clone(), torch.full_like(org_max, 1e9)
            org_out = (xs * ws).sum(dim=-1)
            for i in range(int(max_shrink * grid)):
                max_val = org_max * (1 - i / grid)
                clipped = torch.clamp(ws, -max_val, max_val)
                q = awq_quantize(clipped.reshape(ws.shape[0], -1), spec.bits, size, spec.symmetric).view_as(ws)
                err = ((xs * q).sum(dim=-1) - org_out).pow(2).mean(dim=1).view(least.shape)
                better = err < least
                least[better], best[better] = err[better], max_val[better]
            bounds.append(best.squeeze(1))  # rows, groups, 1
        best_all.append(torch.cat(bounds))
    return torch.cat(best_all, dim=1)


def apply_clip(w: torch.Tensor, bounds: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """`w` (out, in) clamped to +-bound per row and group."""
    cols = w.shape[1]
    g = cols if group_size is None or group_size >= cols else group_size
    full = cols // g * g
    out = w.clone()
    n_full = full // g
    out[:, :full] = torch.clamp(w[:, :full].reshape(w.shape[0], n_full, g), -bounds[:, :n_full], bounds[:, :n_full]).reshape(
        w.shape[0], full)
    if full < cols:
        out[:, full:] = torch.clamp(w[:, full:], -bounds[:, n_full:].squeeze(-1), bounds[:, n_full:].squeeze(-1))
    return out


class AwqSolver:
    """One layer: search every group's scale on the original weights, fold them, search clips, round."""

    def __init__(self, spec: AwqSettings, head_dim: int) -> None:
        self.spec = spec
        self.head_dim = head_dim
        self.scaled_groups = 0
        self.clipped_linears = 0

    def __call__(self, job: GroupJob) -> dict[str, torch.Tensor]:
        chosen = []
        for names in sequential_groups(job.layer):
            found = self._search(job, names)
            if found is not None:
                chosen.append(found)
        inputs = {name: stats.sampled for name, stats in job.stats.items()}  # shared tensors for shared inputs
        inputs = {name: x.clone() for name, x in inputs.items()}
        for prev, linears, scale, shared in chosen:  # fold in upstream's order, dividing the kept inputs
            fold_scale(prev, linears, scale, shared, job.undo)
            for name in linears:
                inputs[name].div_(scale.view(1, -1))
        weights = {name: linear_weight(m).detach().float() for name, m in job.modules.items()}
        if self.spec.auto_clip:
            for name in weights:
                if name in inputs and not any(part in name for part in CLIP_SKIPPED):
                    bounds = clip_search(weights[name], inputs[name], self.spec)
                    weights[name] = apply_clip(weights[name], bounds, self.spec.group_size)
                    self.clipped_linears += 1
        return {n: awq_quantize(w, self.spec.bits, self.spec.group_size, self.spec.symmetric) for n, w in weights.items()}

    def _search(self, job: GroupJob, names: list[str]):
        group = architecture_of(job.layer).scale_groups(job.layer).get(tuple(names))
        if group is None or not all(n in job.stats for n in names):
            return None
        prev, inspect = job.layer.get_submodule(group.prev), job.layer.get_submodule(group.inspect)
        linears = {n: job.modules[n] for n in names}
        stat = job.stats[names[0]].mean_abs
        shared = self._producer_channels(prev, stat.numel(), group.shared)
        if shared is None:
            log.info("AWQ: %s outputs cannot be matched to %s inputs; not scaled", group.prev, names)
            return None
        tied = tie_scales(stat, shared, self.head_dim)
        result = search_scale(
            record_calls(job.layer, job.inputs, inspect), linears, tied, self.spec,
            expand=lambda s: untie_scales(s, stat.numel(), self.head_dim),
        )
        job.extra[f"alpha:{group.inspect}"] = result.alpha
        job.extra[f"loss_vs_rtn:{group.inspect}"] = result.loss / result.unscaled_loss if result.unscaled_loss else 1.0
        self.scaled_groups += 1
        return prev, linears, result.scale, tie_scales(result.scale, shared, self.head_dim)

    def _producer_channels(self, prev: nn.Module, inputs: int, shared: int | None) -> int | None:
        """How many producer outputs feed the `inputs` channels (fewer with grouped-query attention).

        `shared`: the adapter's count of the producer's last rows feeding the group (a fused producer). Fewer
        producer channels than inputs (grouped-query o_proj) are scaled only with `gqa_scales: tied`.
        """
        if prev.weight.dim() == 1:  # a norm
            unsupported = "Gemma" in type(prev).__name__  # (1 + weight) * x_hat: dividing weight is not exact
            return inputs if prev.weight.numel() == inputs and not unsupported else None
        rows = linear_weight(prev).shape[0] if shared is None else shared
        if rows == inputs:  # the producer's (last) rows feed the inputs one to one
            return inputs
        fits = rows < inputs and inputs % rows == 0 and rows % self.head_dim == 0
        return rows if fits and self.spec.gqa_scales == "tied" else None
