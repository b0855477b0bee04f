"""AWQ: activation-aware weight quantization by per-input-channel scaling and weight clipping before rounding.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han, "AWQ: Activation-aware Weight Quantization for LLM
Compression and Acceleration", MLSys 2024 (reference code: mit-han-lab/llm-awq, `pre_quant.run_awq`,
`auto_scale.py`, `auto_clip.py`, `quantizer.pseudo_quantize_tensor`).

Per decoder layer, as `run_awq`: every linear's inputs are kept from one run of the unmodified layer.
1. Scale search (`auto_scale_block`), for each group of linears sharing one input (q/k/v after input_layernorm,
   o_proj after v_proj, gate/up after post_attention_layernorm, down_proj after up_proj), on the layer's
   original weights: the input channels are scaled by s = mean|x|^ratio, normalised by sqrt(max s * min s), for
   ratio = i / grid, i = 0..grid-1 (0, 0.05, ..., 0.95 with the default grid of 20); the loss is the mean squared
   output error of the module the group feeds (the attention block, the MLP, or the linear itself) with the
   scaled weights rounded, and the first least loss wins. mean|x| is one mean over every calibration token's
   input, as upstream's `get_act_scale` on the concatenated inputs. Ratio 0 is the unscaled point, so the chosen
   loss is never above plain rounding's. All ratios run batched (`awq_search.grid_losses`).
2. The chosen scales are folded (inverse into the preceding norm or linear: the same function before rounding),
   and the kept inputs divided by them.
3. Clip search (`auto_clip_block`, `auto_clip: true`), for every linear but q/k: per output row and group, the
   weights are clamped to +-max|w| * (1 - i / 20), i = 0..9, and the value with the least mean squared output
   error on every (tokens // 512)-th calibration token kept (`awq_search.clip_search`, all steps batched).
4. Every linear is rounded with llm-awq's grid (`quantizer.awq_quantize`: the group's own min/max range).
The next layer is calibrated on the unmodified layer's outputs, as upstream.

Measured on stories260k against llm-awq with the same 32 calibration windows, both single-threaded float32 on
CPU (docs/methods.md): w4 g4 with clipping, w3 per channel without, w3 g4 with clipping (the settings upstream
accepts on its widths of 64 and 172) give bit-identical weights, so identical perplexity: the same scale ratio
for every group and the same clip bound for every row and group.
Not reproduced: upstream's default GPU/fp16 arithmetic (this runs in the model's dtype, float32 on CPU); sums
formed in another order (the batched matmuls of both searches, the loss summed per calibration batch), which
can differ in the last bit and so decide a near-tie differently; and upstream's failures: group sizes that do
not divide in_features (here a final partial group gets its own grid), the clip search per channel (upstream
asserts; here the group is the row), fewer than 512 calibration tokens (here every token is used).
Options: `gqa_scales: skip` (default, as upstream) leaves o_proj unscaled when grouped-query attention makes
v_proj narrower than o_proj's input; `tied` scales it anyway, the query heads that read one value head sharing
one scale (the mean of their activation magnitudes). `auto_clip: false` is upstream's `mse_range=False`.
`search_tokens: N` (not upstream's) measures the scale search's loss on the first calibration windows holding
at least N tokens; the means and the clip search still see every token. It cuts the search's cost by the
fraction of tokens left out; see docs/methods.md for its cost and how far its choices move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from doctor.architectures import architecture_of
from doctor.compress.adapters import linear_weight, sequential_groups, set_linear_weight
from doctor.compress.awq_search import (
    ModuleCalls,
    apply_clip,
    candidate_scales,
    clip_search,
    grid_losses,
    scaled_rounded,
)
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
    search_tokens: int | None = None  # the scale search's loss on the first windows holding this many tokens


def record_calls(layer: nn.Module, inputs: LayerInputs, modules: dict[str, nn.Module],
                 batches: int | None = None) -> dict[str, ModuleCalls]:
    """Run the layer once per calibration batch (the first `batches`), recording every call of each module.

    Each forward stops once every module has returned. The outputs are kept in float32.
    """
    recorded: dict[str, list[tuple[tuple, dict[str, Any], torch.Tensor]]] = {name: [] for name in modules}
    pending: dict[str, list[tuple[tuple, dict[str, Any]]]] = {name: [] for name in modules}
    done: set[str] = set()

    def before(name: str):
        def hook(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            pending[name].append((args, dict(kwargs)))

        return hook

    def after(name: str):
        def hook(_m: nn.Module, _args: tuple, _kwargs: dict[str, Any], output: Any) -> None:
            args, kwargs = pending[name].pop()
            recorded[name].append((args, kwargs, layer_output(output).detach().float()))
            done.add(name)
            if len(done) == len(modules):
                stop_forward()

        return hook

    with (
        torch.no_grad(),
        forward_hooks([(m, before(n)) for n, m in modules.items()], pre=True, with_kwargs=True),
        forward_hooks([(m, after(n)) for n, m in modules.items()], with_kwargs=True),
    ):
        for i in range(len(inputs) if batches is None else min(batches, len(inputs))):
            done.clear()
            run_until_stopped(inputs.call, layer, i)
    return {name: ModuleCalls(modules[name], calls) for name, calls in recorded.items()}


def search_batches(inputs: LayerInputs, search_tokens: int | None) -> int:
    """How many leading calibration batches hold at least `search_tokens` tokens (all of them for None)."""
    if search_tokens is None:
        return len(inputs)
    seen = 0
    for i, h in enumerate(inputs.hidden):
        seen += h.shape[0] * h.shape[1]
        if seen >= search_tokens:
            return i + 1
    return len(inputs)


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
    losses=grid_losses,
) -> SearchResult:
    """Grid search of the exponent over i / grid, i = 0..grid-1, all ratios batched (`awq_search.grid_losses`).

    `stat` is mean |x| per (producer) channel; `expand` maps producer-channel scales to the linears' inputs.
    The linears' weights are left as they were. The first ratio with the least loss wins, as upstream's `<`.
    """
    scales = torch.stack([expand(s) for s in candidate_scales(stat, spec.grid)])
    weights = {name: linear_weight(m).detach().float().clone() for name, m in linears.items()}  # not aliased
    found = losses(calls, linears, scales, scaled_rounded(weights, spec.bits, spec.group_size, spec.symmetric))
    best = int(found.argmin())
    return SearchResult(scales[best], best / spec.grid, float(found[best]), float(found[0]))


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
    """Every input row of a linear, for llm-awq's statistics: mean |x| per feature over all calibration tokens
    (`get_act_scale`, one mean over the concatenated inputs as upstream) and every (tokens // 512)-th token for the
    clip search (`auto_clip_layer`'s n_sample_token)."""

    def __init__(self, features: int, device: torch.device | str, n_sample_token: int = 512) -> None:
        super().__init__(features, device)
        self.n_sample_token = n_sample_token
        self.chunks: list[torch.Tensor] = []
        self._uniform = False

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        self.tokens += rows.shape[0]
        self.chunks.append(rows)

    def uniform(self) -> None:
        self.tokens = max(self.tokens, 1)
        self._uniform = True

    @property
    def rows(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0, self.features, device=self.device)

    @property
    def mean_abs(self) -> torch.Tensor:
        if self._uniform:
            return torch.ones(self.features, dtype=torch.float32, device=self.device)
        return self.rows.abs().view(-1, self.features).mean(0)

    @property
    def sampled(self) -> torch.Tensor:
        """Rows 0, step, 2 step, ... with step = tokens // n_sample_token (every row below that many tokens)."""
        rows = self.rows
        return rows[:: max(1, rows.shape[0] // self.n_sample_token)]


CLIP_SKIPPED = ("q_", "k_", "query", "key", "Wqkv")  # upstream: "due to qk bmm, it is hard to clip precisely"


@dataclass
class GroupPlan:
    """A group to scale: its linears, their producer, the module whose output the search compares."""

    names: list[str]
    prev: nn.Module
    inspect: str
    stat: torch.Tensor  # mean |x| per input channel
    shared: int  # producer channels feeding the inputs


class AwqSolver:
    """One layer: search every group's scale on the original weights, fold them, search clips, round."""

    def __init__(self, spec: AwqSettings, head_dim: int) -> None:
        self.spec = spec
        self.head_dim = head_dim
        self.scaled_groups = 0
        self.clipped_linears = 0

    def __call__(self, job: GroupJob) -> dict[str, torch.Tensor]:
        plans = [plan for names in sequential_groups(job.layer) if (plan := self._plan(job, names)) is not None]
        inspected = {plan.inspect: job.layer.get_submodule(plan.inspect) for plan in plans}
        calls = record_calls(job.layer, job.inputs, inspected, search_batches(job.inputs, self.spec.search_tokens))
        chosen = [self._search(job, plan, calls[plan.inspect]) for plan in plans]
        del calls
        inputs = {id(stats): stats.sampled for stats in job.stats.values()}  # one tensor per shared input
        inputs = {name: inputs[id(stats)] for name, stats in job.stats.items()}
        for prev, linears, scale, shared in chosen:  # fold in upstream's order, dividing the kept inputs
            fold_scale(prev, linears, scale, shared, job.undo)
            inputs[next(iter(linears))].div_(scale.view(1, -1))  # the group's linears share this tensor
        weights = {name: linear_weight(m).detach().float() for name, m in job.modules.items()}
        if self.spec.auto_clip:
            for name in weights:
                if name in inputs and not any(part in name for part in CLIP_SKIPPED):
                    bounds = clip_search(weights[name], inputs[name], self.spec.bits, self.spec.group_size,
                                         self.spec.symmetric)
                    weights[name] = apply_clip(weights[name], bounds, self.spec.group_size)
                    self.clipped_linears += 1
        return {n: awq_quantize(w, self.spec.bits, self.spec.group_size, self.spec.symmetric) for n, w in weights.items()}

    def _plan(self, job: GroupJob, names: list[str]) -> GroupPlan | None:
        """The group's producer and inspected module, or None where it is not scaled."""
        group = architecture_of(job.layer).scale_groups(job.layer).get(tuple(names))
        if group is None or not all(n in job.stats for n in names):
            return None
        prev = job.layer.get_submodule(group.prev)
        stat = job.stats[names[0]].mean_abs
        shared = self._producer_channels(prev, stat.numel(), group.shared)
        if shared is None:
            log.info("AWQ: %s outputs cannot be matched to %s inputs; not scaled", group.prev, names)
            return None
        return GroupPlan(list(names), prev, group.inspect, stat, shared)

    def _search(self, job: GroupJob, plan: GroupPlan, calls: ModuleCalls):
        linears = {n: job.modules[n] for n in plan.names}
        channels = plan.stat.numel()
        result = search_scale(
            calls, linears, tie_scales(plan.stat, plan.shared, self.head_dim), self.spec,
            expand=lambda s: untie_scales(s, channels, self.head_dim),
        )
        job.extra[f"alpha:{plan.inspect}"] = result.alpha
        job.extra[f"loss_vs_rtn:{plan.inspect}"] = result.loss / result.unscaled_loss if result.unscaled_loss else 1.0
        self.scaled_groups += 1
        return plan.prev, linears, result.scale, tie_scales(result.scale, plan.shared, self.head_dim)

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
