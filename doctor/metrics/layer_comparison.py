"""A modified model's decoder blocks against the layer probe's baseline, gathered during its evaluation pass."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from doctor.compress.adapters import block_linears, decoder_layers
from doctor.placement.offload import module_device
from doctor.results import LayerStat

log = logging.getLogger(__name__)
# positions, over all probed windows, at which a changed linear layer's error is measured: each gives every
# output of the layer, and on SmolLM2 the errors at 128 moved by at most 3% from those at 512, in the same order
MODULE_TOKENS = 128


def hidden_states(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class Timer:
    """Seconds spent in the probe's own work (hooks and replays), to price it in evaluation passes."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def module_column(name: str) -> str:
    """A linear layer's heatmap column: its own name in the block; experts pooled per projection."""
    parts = name.split(".")
    return f"experts.{parts[-1]}" if "experts" in parts else parts[-1]


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b||^2 in one fused reduction (no temporary difference), in float32 at least."""
    if a.dtype != b.dtype or a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    return float(torch.dist(a, b)) ** 2


def squared_norm(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a, dtype=torch.float32 if a.dtype != torch.float64 else None)) ** 2


def relative_error(modified: list[torch.Tensor], base: list[torch.Tensor]) -> float:
    """||modified - base|| / ||base|| over all windows and tokens."""
    diff = math.fsum(squared_distance(m, b) for m, b in zip(modified, base, strict=True))
    ref = math.fsum(squared_norm(b) for b in base)
    return math.sqrt(diff / ref) if ref > 0 else 0.0


class Comparison:
    """One modified model's blocks on the probed windows, gathered by hooks during its evaluation pass.

    rel_error: ||h_mod - h_base|| / ||h_base|| at the block's output (accumulated through the network);
    extra.local_error: the same for the modified block alone on the baseline's input (replayed after the pass
    on the first `local` windows); extra.module_error.<module>: ||(W' - W) x|| / ||W x|| of each changed linear
    on the activations it receives, at every stride-th position (up to MODULE_TOKENS over the probed windows); with entropies,
    extra.attention_entropy and attention_entropy_shift (modified - baseline). Removed baseline blocks are
    reported with removed = 1 and local_error = the error of skipping them; inserted blocks with inserted = 1,
    numbered after the baseline's blocks (extra.position is where they sit in the modified model).
    """

    def __init__(self, probe, model: nn.Module, originals: dict[int, torch.Tensor]) -> None:
        self.probe = probe
        self.current = list(decoder_layers(model))
        self.matched = probe.match(model)
        self.originals = originals
        self.outputs: list[list[torch.Tensor]] = [[] for _ in self.current]
        self.modules: list[dict[str, list[float]]] = [{} for _ in self.current]  # [block][column] = [diff2, ref2]
        self.seen = [0] * len(self.current)
        self.rows = [0] * len(self.current)  # rows of the current batch that are probed windows, per block
        self.stride = [1] * len(self.current)  # token stride of the module error in the current batch
        self.timer = Timer()

    def complete(self) -> bool:
        """Whether every block saw the probed windows (an exported model's pass never runs these blocks)."""
        return all(n >= self.probe.limit for n in self.seen)

    def hooks(self) -> list:
        handles = []
        for j, block in enumerate(self.current):
            handles.append(block.register_forward_pre_hook(self._pre_hook(j), with_kwargs=True))
            handles.append(block.register_forward_hook(self._post_hook(j)))
            handles += self._module_hooks(j, block)
        return handles

    def _pre_hook(self, j: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.rows[j] = max(0, min(hidden.shape[0], self.probe.limit - self.seen[j]))
            self.stride[j] = max(1, -(-hidden.shape[1] * self.probe.limit // MODULE_TOKENS)) if hidden.dim() == 3 else 1

        return hook

    def _post_hook(self, j: int):
        def hook(module, args, output):
            with self.timer():
                out = hidden_states(output)
                if self.rows[j]:
                    self.outputs[j].append(out[: self.rows[j]].detach().float().cpu())
                self.seen[j] += out.shape[0]

        return hook

    def _module_hooks(self, j: int, block: nn.Module) -> list:
        """Forward hooks that add ||y' - y||^2 and ||y||^2 per changed linear, y from its original weight."""
        handles = []
        for name, linear in block_linears(block).items():
            weight = getattr(linear, "weight", None)
            original = None if weight is None else self.originals.get(id(weight))
            if original is None or original.shape != weight.shape:
                continue
            if type(linear).__name__ == "Conv1D":  # GPT-2 stores the transpose
                original = original.t()
            sums = self.modules[j].setdefault(module_column(name), [0.0, 0.0])
            handles.append(linear.register_forward_hook(self._module_hook(j, original, sums)))
        return handles

    def _module_hook(self, j: int, original: torch.Tensor, sums: list[float]):
        def hook(module, args, output):
            if not self.rows[j]:
                return
            with self.timer():
                x, y = args[0], output
                if x.dim() == 3:  # (batch, seq, in): the probed windows, every stride-th position
                    x, y = x[: self.rows[j], :: self.stride[j]], y[: self.rows[j], :: self.stride[j]]
                else:  # routed tokens (experts): every stride-th one
                    x, y = x[:: self.stride[j]], y[:: self.stride[j]]
                reference = torch.nn.functional.linear(x, original.to(x.device, x.dtype), module.bias)
                sums[0] += squared_distance(y, reference)
                sums[1] += squared_norm(reference)

        return hook

    def stats(self, entropies: list[float | None] | None = None) -> list[LayerStat]:
        """Per-block statistics, after the pass; `entropies` from `LayerProbe.entropies` on the modified model."""
        with self.timer():
            local = [self._local_error(block, j) for j, block in enumerate(self.current)]
        stats = self._assemble(local, entropies or [None] * len(self.current))
        return self._with_module_errors(stats)

    def _local_error(self, block: nn.Module, j: int) -> float:
        probe, base = self.probe, self.matched[j]
        if base is not None:
            source, inputs, targets = base, probe.inputs[base], probe.local_targets(base)
        else:  # an inserted block: fed what the baseline passed on at this point, ideally left unchanged
            before = next((self.matched[k] for k in range(j - 1, -1, -1) if self.matched[k] is not None), None)
            source = 0 if before is None else before
            targets = probe.inputs[0] if before is None else probe.local_targets(before)
            inputs = targets
        device = module_device(block)  # an offloaded block's weights are on meta until its hooks run
        dtype = next(block.parameters()).dtype  # a meta parameter still has its dtype
        diff = ref = 0.0
        with torch.no_grad():
            for inp, target, call in zip(inputs, targets, probe.calls[source], strict=True):
                # kept in float32 on the host; a bf16/fp16 block is fed its own dtype (exact: widened from it)
                fed = inp.to(device, dtype)
                out = hidden_states(block(fed, *call.args, **call.kwargs)).float().cpu()
                diff += squared_distance(out, target)
                ref += squared_norm(target)
        return math.sqrt(diff / ref) if ref > 0 else 0.0

    def _assemble(self, local: list[float], entropies: list[float | None]) -> list[LayerStat]:
        probe = self.probe
        stats: list[LayerStat] = []
        seen: set[int] = set()
        for j, base in enumerate(self.matched):
            extra = {"local_error": local[j], "position": float(j)}
            entropy = entropies[j]
            if entropy is not None:
                extra["attention_entropy"] = entropy
            if base is None:  # numbered after the baseline's blocks so every `layer` stays unique
                extra["inserted"] = 1.0
                index = len(probe.layers) + sum(m is None for m in self.matched[:j])
                stats.append(LayerStat(layer=index, name=f"inserted at position {j}", extra=extra))
                continue
            seen.add(base)
            self._removed_before(base, seen, stats)
            base_entropy = probe.entropy[base]
            if entropy is not None and base_entropy is not None:
                extra["attention_entropy_shift"] = entropy - base_entropy
                extra["attention_entropy_change"] = abs(entropy - base_entropy)
            error = relative_error(self.outputs[j], probe.outputs[base])
            stats.append(LayerStat(layer=base, name=f"layers.{base}", rel_error=error, extra=extra))
        self._removed_before(len(probe.layers), seen, stats)
        if len(self.matched) != len(probe.layers) or any(m is None for m in self.matched):
            log.info("layer probe: %d of %d baseline blocks matched, %d inserted", len(seen), len(probe.layers),
                     sum(m is None for m in self.matched))  # fmt: skip
        return stats

    def _removed_before(self, limit: int, seen: set[int], stats: list[LayerStat]) -> None:
        """Report baseline blocks below `limit` that no longer exist (removed), once each."""
        reported = {s.layer for s in stats if s.extra.get("removed")}
        for i in range(limit):
            if i not in seen and i not in reported:
                skip = relative_error(self.probe.inputs[i], self.probe.local_targets(i))
                stats.append(LayerStat(layer=i, name=f"layers.{i} (removed)", extra={"removed": 1.0, "local_error": skip}))
                reported.add(i)

    def _with_module_errors(self, stats: list[LayerStat]) -> list[LayerStat]:
        by_layer = {s.layer: s for s in stats}
        n_base = len(self.probe.layers)
        for j, sums in enumerate(self.modules):
            base = self.matched[j]
            layer = base if base is not None else n_base + sum(m is None for m in self.matched[:j])
            stat = by_layer.get(layer)
            for column, (diff, ref) in sums.items():
                if stat is not None and ref > 0:
                    stat.extra[f"module_error.{column}"] = math.sqrt(diff / ref)
        return stats
