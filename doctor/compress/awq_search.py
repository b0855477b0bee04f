"""AWQ's two searches as batched tensor math: every grid point of a search in one computation.

- Scale search (llm-awq `auto_scale._search_module_scale`): the module the group feeds is run once per grid
  ratio with the group's linears replaced by their scaled-and-rounded weights. Here the ratios are stacked and
  the module runs under `torch.func.vmap` over the stacked weights (`functional_call`), in chunks of ratios that
  fit a memory budget: the same arithmetic per ratio as a loop, batched (sums over a batched matmul may round
  differently in the last bit). `loop_losses` is the loop formulation, used when a module cannot be vmapped
  (and by the tests as the yardstick).
- Clip search (llm-awq `auto_clip.auto_clip_layer`): every shrink step of the grid at once for a batch of
  output rows, each group's outputs one batched matmul (upstream sums element-wise products: the same products
  summed in another order); the tests hold upstream's loop as the yardstick.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from doctor.compress.adapters import linear_weight, set_linear_weight
from doctor.compress.capture import layer_output
from doctor.compress.quantizer import awq_quantize

log = logging.getLogger(__name__)

MEMORY_BUDGET = 64 * 2**20  # bytes of temporaries one batched step may allocate (larger ran no faster on CPU)


@dataclass
class ModuleCalls:
    """Recorded calls of one module over (some of) the calibration batches: arguments and float32 outputs."""

    module: nn.Module
    calls: list[tuple[tuple, dict[str, Any], torch.Tensor]]

    @property
    def elements(self) -> int:
        return sum(expected.numel() for _, _, expected in self.calls)

    def loss(self) -> float:
        """Mean squared difference between the module's current outputs and the recorded ones."""
        total = 0.0
        with torch.no_grad():
            for args, kwargs, expected in self.calls:
                out = layer_output(self.module(*args, **kwargs)).float()
                total += float((out - expected).pow(2).sum())
        return total / self.elements


def candidate_scales(stat: torch.Tensor, grid: int) -> torch.Tensor:
    """(grid, channels): s = stat^(i / grid) clamped at 1e-4, over sqrt(max s * min s), as upstream per ratio.

    One ratio at a time with a Python exponent, as upstream: `pow` with a scalar exponent takes special paths
    (0, 0.5) that a tensor of exponents would not, and the candidates must be the reference's to the bit.
    """
    rows = []
    for i in range(grid):
        s = stat.pow(i * 1 / grid).clamp(min=1e-4).view(-1)
        rows.append(s / (s.max() * s.min()).sqrt())
    return torch.stack(rows)


GridWeights = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # scales (g, in) -> name -> (g, out, in) weights


def scaled_rounded(weights: dict[str, torch.Tensor], bits: int, group_size: int | None,
                   symmetric: bool) -> GridWeights:
    """Q(W * s) / s for every linear and every row of scales: the weights upstream tries per ratio."""

    def make(scales: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, w in weights.items():
            rows = [awq_quantize(w * s, bits, group_size, symmetric) / s for s in scales]
            out[name] = torch.stack(rows)
        return out

    return make


def loop_losses(calls: ModuleCalls, linears: dict[str, nn.Module], scales: torch.Tensor,
                make: GridWeights) -> torch.Tensor:
    """One module run per scale row with the linears' weights replaced; the weights are restored exactly."""
    originals = {name: m.weight.detach().clone() for name, m in linears.items()}
    losses = []
    try:
        for s in scales:
            for name, w in make(s.unsqueeze(0)).items():
                set_linear_weight(linears[name], w[0])
            losses.append(calls.loss())
    finally:
        with torch.no_grad():
            for name, module in linears.items():
                module.weight.copy_(originals[name])
    return torch.tensor(losses, dtype=torch.float64)


def grid_losses(calls: ModuleCalls, linears: dict[str, nn.Module], scales: torch.Tensor, make: GridWeights,
                memory_budget: int = MEMORY_BUDGET) -> torch.Tensor:
    """Loss per scale row, the rows batched under vmap in chunks; the loop where vmap cannot run the module."""
    names = _parameter_names(calls.module, linears)
    if names is None:
        return loop_losses(calls, linears, scales, make)
    chunk = _grid_chunk(calls, linears, scales.shape[0], memory_budget)
    losses = []
    try:
        for start in range(0, scales.shape[0], chunk):
            weights = make(scales[start : start + chunk])
            params = {names[n]: _module_layout(linears[n], w) for n, w in weights.items()}
            losses.append(_batched_loss(calls, params))
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:  # a module vmap cannot batch
        log.info("AWQ: %s cannot run batched over the grid (%s); one run per ratio", type(calls.module).__name__, exc)
        return loop_losses(calls, linears, scales, make)
    return torch.cat(losses)


def _batched_loss(calls: ModuleCalls, params: dict[str, torch.Tensor]) -> torch.Tensor:
    total = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.float64)
    for args, kwargs, expected in calls.calls:

        def squared_error(p: dict[str, torch.Tensor], args=args, kwargs=kwargs, expected=expected) -> torch.Tensor:
            out = layer_output(functional_call(calls.module, p, args, kwargs, strict=False)).float()
            return (out - expected).pow(2).sum()

        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*batching rule.*")  # sdpa: vmap loops over it, still right
            total += vmap(squared_error)(params).double()
    return total / calls.elements


def _parameter_names(inspect: nn.Module, linears: dict[str, nn.Module]) -> dict[str, str] | None:
    """The linears' weights as `inspect`'s parameter names; None when one lies outside it or is offloaded."""
    by_id = {id(p): name for name, p in inspect.named_parameters(remove_duplicate=False)}
    names = {n: by_id.get(id(m.weight)) for n, m in linears.items()}
    hooked = any(hasattr(m, "_hf_hook") for m in inspect.modules())  # accelerate swaps weights in its hooks
    return None if hooked or any(v is None for v in names.values()) else names


def _module_layout(module: nn.Module, weights: torch.Tensor) -> torch.Tensor:
    """(g, out, in) float32 weights in the module's own layout and dtype (Conv1D stores (in, out))."""
    if type(module).__name__ == "Conv1D":
        weights = weights.transpose(1, 2)
    return weights.to(module.weight.dtype)


def _grid_chunk(calls: ModuleCalls, linears: dict[str, nn.Module], grid: int, budget: int) -> int:
    """How many ratios fit the budget: their weights plus a few copies of each linear's and the module's output."""
    tokens = max(expected.numel() // expected.shape[-1] for _, _, expected in calls.calls)
    widths = sum(linear_weight(m).shape[0] for m in linears.values()) + calls.calls[0][2].shape[-1]
    per_ratio = 4 * (4 * tokens * widths + 2 * sum(linear_weight(m).numel() for m in linears.values()))
    return max(1, min(grid, budget // per_ratio))


def clip_search(w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int | None, symmetric: bool,
                grid: int = 20, max_shrink: float = 0.5, memory_budget: int = MEMORY_BUDGET) -> torch.Tensor:
    """Per row and group of `w` (out, in), the clamp bound with the least squared error of x @ group on `x`.

    Returns (out, groups, 1) bounds; upstream's `auto_clip_layer` with its grid of 20 and shrink of at most 50%,
    every shrink step of a batch of rows at once. A final partial group (which upstream refuses) is searched
    on its own.
    """
    steps = int(max_shrink * grid)
    bounds = []
    for cols, size in _column_groups(w.shape[1], group_size):
        xg = x[:, cols].reshape(x.shape[0], -1, size).transpose(0, 1)  # groups, tokens, size
        per_row = 4 * 3 * (steps + 1) * xg.shape[0] * xg.shape[1]  # the products and their temporaries
        rows = max(1, min(w.shape[0], memory_budget // per_row))
        found = [_clip_rows(w[r : r + rows, cols].reshape(-1, xg.shape[0], size), xg, bits, symmetric, grid, steps)
                 for r in range(0, w.shape[0], rows)]
        bounds.append(torch.cat(found))
    return torch.cat(bounds, dim=1)


def _clip_rows(ws: torch.Tensor, xg: torch.Tensor, bits: int, symmetric: bool, grid: int, steps: int) -> torch.Tensor:
    """Bounds (rows, groups, 1) for weights `ws` (rows, groups, size) on inputs `xg` (groups, tokens, size).

    Each group's outputs are one batched matmul over all shrink steps (upstream multiplies element-wise and sums:
    the same products, summed in another order, so an error may differ in its last bit).
    """
    rows, groups, size = ws.shape
    org_max = ws.abs().amax(dim=-1, keepdim=True)  # rows, groups, 1
    org_out = torch.bmm(xg, ws.permute(1, 2, 0))  # groups, tokens, rows
    max_val = torch.stack([org_max * (1 - i / grid) for i in range(steps)])  # steps, rows, groups, 1
    q = awq_quantize(torch.clamp(ws, -max_val, max_val), bits, None, symmetric)  # the last dim is one group
    out = torch.bmm(xg, q.permute(2, 3, 0, 1).reshape(groups, size, steps * rows))  # groups, tokens, steps * rows
    err = (out.view(groups, -1, steps, rows) - org_out.unsqueeze(2)).pow(2).mean(dim=1)  # groups, steps, rows
    best = err.argmin(dim=1)  # the first least error, as upstream's strict `<` over increasing shrink
    return max_val.squeeze(-1).gather(0, best.t().unsqueeze(0)).squeeze(0).unsqueeze(-1)


def _column_groups(cols: int, group_size: int | None) -> Iterator[tuple[slice, int]]:
    g = cols if group_size is None or group_size >= cols else group_size
    full = cols // g * g
    yield slice(0, full), g
    if full < cols:
        yield slice(full, cols), cols - full


def apply_clip(w: torch.Tensor, bounds: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """`w` (out, in) clamped to +-bound per row and group."""
    out = w.clone()
    first = 0
    for cols, size in _column_groups(w.shape[1], group_size):
        n = (cols.stop - cols.start) // size
        b = bounds[:, first : first + n]  # rows, n, 1
        block = w[:, cols].reshape(w.shape[0], n, size)
        out[:, cols] = torch.clamp(block, -b, b).reshape(w.shape[0], -1)
        first += n
    return out
