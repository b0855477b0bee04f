"""Layer-wise localisation: where in the network a modification does its damage.

The probe rides on the evaluation passes through hooks (no pass of its own). On the baseline pass it keeps
each decoder block's output hidden states on the first few windows, and per layer over every window:
- Block Influence, BI = 1 - mean cos(h_in, h_out) over tokens (Men et al., "ShortGPT: Layers in Large Language
  Models are More Redundant Than You Expect", arXiv 2403.03853, eq. 1);
- activation outliers of the inputs to the block's linear layers: the largest per-channel magnitude over the
  median one (the channel outliers of Dettmers et al., "LLM.int8()", arXiv 2208.07339, that make round-to-
  nearest quantization fail and motivate AWQ).
On a modified model's pass it reports each block's relative output error against the baseline (accumulated
through the network) and, replaying each block on the baseline's input of the first window(s), its local
error (the modified block alone). Blocks are matched by identity, so removed and inserted blocks are reported
as such. Given the original weights of the linear layers a modification changed, it also reports each one's
relative output error ||(W' - W) x|| / ||W x|| on the activations it receives (extra `module_error.<module>`):
where in the block the damage enters.

Attention entropy, the mean over heads and queries of -sum p log p of the attention probabilities (Zhai et
al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", arXiv 2303.06296), needs the
eager attention path, which returns the probabilities: it costs a pass of its own over the probed windows and
is measured only when asked for (the `attention` metric group).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import fmean

import torch
from torch import nn

from doctor.compress.adapters import block_linears, decoder_layers
from doctor.results import LayerStat

log = logging.getLogger(__name__)
PROBE_WINDOWS = 4  # windows whose block outputs are kept for the per-layer error
LOCAL_WINDOWS = 1  # windows on which each block is replayed for its local error (a block pass each)
MODULE_TOKENS = 256  # positions per window at which a changed linear layer's error is measured


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Switch to the eager attention path (which returns attention probabilities) for the duration.

    Every config reachable from the model is switched: a copied block (layer expansion) may hold its own.
    """
    configs = {id(model.config): model.config}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            configs.setdefault(id(config), config)
    previous = []
    for config in configs.values():
        try:
            previous.append((config, config._attn_implementation))
            config._attn_implementation = "eager"
        except (AttributeError, ValueError) as exc:
            log.info("cannot switch to eager attention (%s); attention entropy will be missing", exc)
    try:
        yield
    finally:
        for config, value in previous:
            config._attn_implementation = value


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def attention_module(block: nn.Module) -> nn.Module | None:
    for name in ("self_attn", "attn", "attention", "self_attention"):
        module = getattr(block, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def attention_entropy(probs: torch.Tensor) -> tuple[float, int]:
    """Sum over (batch, heads, queries) of the entropy in nats of attention rows (b, h, q, k), and the count."""
    p = probs.detach().float()
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (b, h, q)
    return float(ent.sum()), ent.numel()


@dataclass
class _Running:
    """Per-layer accumulators over windows."""

    cos_sum: float = 0.0
    tokens: int = 0
    entropy_sum: float = 0.0
    entropy_n: int = 0
    channel_max: dict[str, torch.Tensor] = field(default_factory=dict)

    def add_channels(self, name: str, x: torch.Tensor) -> None:
        peak = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).float().cpu()  # (in_features,)
        old = self.channel_max.get(name)
        self.channel_max[name] = peak if old is None else torch.maximum(old, peak)

    def entropy(self) -> float | None:
        return self.entropy_sum / self.entropy_n if self.entropy_n else None


@contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _entropy_hook(running: _Running):
    def hook(module, args, output):
        if isinstance(output, (tuple, list)):
            probs = next((t for t in output[1:] if isinstance(t, torch.Tensor) and t.dim() == 4), None)
            if probs is not None:
                total, n = attention_entropy(probs)
                running.entropy_sum += total
                running.entropy_n += n

    return hook


def _first_rows(value, rows: int, batch: int):
    """A block call's arguments cut to the batch's first `rows` windows (tensors whose first dim is the batch)."""
    if isinstance(value, torch.Tensor):
        return value[:rows] if rows < batch and value.dim() >= 2 and value.shape[0] == batch else value
    if isinstance(value, tuple):
        return tuple(_first_rows(v, rows, batch) for v in value)
    if isinstance(value, list):
        return [_first_rows(v, rows, batch) for v in value]
    if isinstance(value, dict):
        return {k: _first_rows(v, rows, batch) for k, v in value.items()}
    return value


@dataclass
class _Call:
    """The arguments a block was called with on a chunk of windows (the hidden states replaced on replay)."""

    args: tuple
    kwargs: dict


class _Timer:
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


class LayerProbe:
    """Baseline hidden states and statistics per decoder block, for localising a modification's damage.

    The probe rides on evaluation passes through hooks: `recording` on the baseline pass keeps each block's
    output on the first `limit` windows (its input and call on the first `local` windows, to replay blocks for
    their local error) and gathers Block Influence and input outliers over every window; `comparing` on a
    checkup's pass keeps the modified blocks' outputs and each changed linear layer's error. Only attention
    entropy needs a pass of its own (eager attention returns the probabilities): `entropies`, on request.
    """

    def __init__(self, layers: list[nn.Module], windows: torch.Tensor, *, batch_size: int = 4,
                 limit: int = PROBE_WINDOWS, local: int = LOCAL_WINDOWS) -> None:
        self.layers = layers  # the baseline block objects, to recognise them after removal or insertion
        self.windows = windows  # every evaluation window, batched as the evaluation pass batches them
        self.batch_size = batch_size
        self.limit = max(1, min(limit, windows.shape[0]))
        self.local = max(1, min(local, self.limit))
        self.inputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][chunk] (rows, seq, hidden) cpu
        self.calls: list[list[_Call]] = [[] for _ in layers]  # [layer][chunk], for the first `local` windows
        self.outputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][chunk], first `limit` windows
        self.running = [_Running() for _ in layers]
        self.entropy: list[float | None] = [None for _ in layers]  # from `entropies`, when asked for
        self.timer = _Timer()

    @classmethod
    def capture(cls, model: nn.Module, windows: torch.Tensor, *, batch_size: int = 4, attention: bool = False,
                **limits) -> LayerProbe:
        """Record the (unmodified) model on `windows` (n, seq_len) with a pass of the probe's own."""
        probe = cls(list(decoder_layers(model)), windows, batch_size=batch_size, **limits)
        with probe.recording():
            probe.run(model)
        if attention:
            probe.entropy = probe.entropies(model)
        return probe

    def run(self, model: nn.Module) -> None:
        """The decoder body over the probed windows, batched as the evaluation pass batches them."""
        body = getattr(model, "base_model", model)
        device = next(model.parameters()).device
        with torch.no_grad():
            for w0 in range(0, self.limit, self.batch_size):
                body(input_ids=self.windows[w0 : w0 + self.batch_size].to(device), use_cache=False)

    @contextmanager
    def recording(self) -> Iterator[LayerProbe]:
        """Hooks that record the baseline blocks during a pass over the evaluation windows (in order)."""
        seen = [0] * len(self.layers)
        pending: list[torch.Tensor | None] = [None] * len(self.layers)
        handles = []
        for i, block in enumerate(self.layers):
            handles.append(block.register_forward_pre_hook(self._pre_hook(i, seen, pending), with_kwargs=True))
            handles.append(block.register_forward_hook(self._post_hook(i, seen, pending)))
            for name, linear in block_linears(block).items():
                handles.append(linear.register_forward_pre_hook(self._linear_hook(i, name)))
        with _hooks(handles):
            yield self

    def _pre_hook(self, i: int, seen: list[int], pending: list):
        def hook(module, args, kwargs):
            with self.timer():
                hidden = args[0] if args else kwargs["hidden_states"]
                pending[i] = hidden
                batch = hidden.shape[0]
                rows = min(batch, self.local - seen[i])
                if rows > 0:
                    self.inputs[i].append(hidden[:rows].detach().float().cpu())
                    rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                    self.calls[i].append(_Call(_first_rows(tuple(args[1:]), rows, batch), _first_rows(rest, rows, batch)))

        return hook

    def _post_hook(self, i: int, seen: list[int], pending: list):
        def hook(module, args, output):
            with self.timer():
                out = _hidden(output).detach()
                inp, pending[i] = pending[i], None
                cos = torch.nn.functional.cosine_similarity(inp.float(), out.float(), dim=-1)  # (batch, seq)
                self.running[i].cos_sum += float(cos.sum())
                self.running[i].tokens += cos.numel()
                rows = min(out.shape[0], self.limit - seen[i])
                if rows > 0:
                    self.outputs[i].append(out[:rows].float().cpu())
                seen[i] += out.shape[0]

        return hook

    def _linear_hook(self, i: int, name: str):
        def hook(module, args):
            with self.timer():
                self.running[i].add_channels(name, args[0])

        return hook

    def entropies(self, model: nn.Module) -> list[float | None]:
        """Mean attention entropy of each block of `model` over the probed windows: a pass of its own with eager
        attention, the only path that returns attention probabilities."""
        current = list(decoder_layers(model))
        running = [_Running() for _ in current]
        handles = []
        for j, block in enumerate(current):
            attn = attention_module(block)
            if attn is not None:
                handles.append(attn.register_forward_hook(_entropy_hook(running[j])))
        body = getattr(model, "base_model", model)
        device = next(model.parameters()).device
        with _hooks(handles), eager_attention(model), torch.no_grad():
            for w0 in range(0, self.limit, self.batch_size):
                body(input_ids=self.windows[w0 : min(w0 + self.batch_size, self.limit)].to(device), use_cache=False)
        return [r.entropy() for r in running]

    def baseline_stats(self) -> list[LayerStat]:
        """Block Influence, activation outliers and (when measured) attention entropy of each baseline block."""
        stats = []
        for i, run in enumerate(self.running):
            extra = {"block_influence": 1.0 - run.cos_sum / max(run.tokens, 1)}
            ratios = {name: outlier_ratio(peaks) for name, peaks in run.channel_max.items()}
            if ratios:
                extra["outlier_ratio"] = max(ratios.values())
                for name, ratio in ratios.items():  # per module input, pooled over experts
                    key = f"outlier_ratio.{module_column(name)}"
                    extra[key] = max(ratio, extra.get(key, 0.0))
                extra["outlier_max"] = max(float(p.max()) for p in run.channel_max.values())
            if self.entropy[i] is not None:
                extra["attention_entropy"] = self.entropy[i]
            stats.append(LayerStat(layer=i, name=f"layers.{i}", extra=extra))
        return stats

    def match(self, model: nn.Module) -> list[int | None]:
        """For each block of `model`, the baseline index it came from (None: inserted)."""
        current = list(decoder_layers(model))
        ids = {id(block): i for i, block in enumerate(self.layers)}
        matched = [ids.get(id(block)) for block in current]
        if all(m is None for m in matched) and len(current) == len(self.layers):
            return list(range(len(current)))  # blocks were replaced one for one: match by position
        return matched

    @contextmanager
    def comparing(self, model: nn.Module, originals: dict[int, torch.Tensor] | None = None) -> Iterator[Comparison]:
        """Hooks that record the modified `model`'s blocks during a pass over the evaluation windows (in order)."""
        comparison = Comparison(self, model, originals or {})
        with _hooks(comparison.hooks()):
            yield comparison

    def compare(self, model: nn.Module, originals: dict[int, torch.Tensor] | None = None, *,
                attention: bool = False) -> list[LayerStat]:
        """Per-block error of the modified `model` against the baseline, with a pass of the probe's own."""
        with self.comparing(model, originals) as comparison:
            self.run(model)
        return comparison.stats(self.entropies(model) if attention else None)

    def local_targets(self, i: int) -> list[torch.Tensor]:
        """Baseline block i's outputs on the replayed windows, chunked as its inputs."""
        return [out[: inp.shape[0]] for inp, out in zip(self.inputs[i], self.outputs[i], strict=False)]


class Comparison:
    """One modified model's blocks on the probed windows, gathered by hooks during its evaluation pass.

    rel_error: ||h_mod - h_base|| / ||h_base|| at the block's output (accumulated through the network);
    extra.local_error: the same for the modified block alone on the baseline's input (replayed after the pass
    on the first `local` windows); extra.module_error.<module>: ||(W' - W) x|| / ||W x|| of each changed linear
    on the activations it receives, at up to MODULE_TOKENS positions per window; with entropies,
    extra.attention_entropy and attention_entropy_shift (modified - baseline). Removed baseline blocks are
    reported with removed = 1 and local_error = the error of skipping them; inserted blocks with inserted = 1,
    numbered after the baseline's blocks (extra.position is where they sit in the modified model).
    """

    def __init__(self, probe: LayerProbe, model: nn.Module, originals: dict[int, torch.Tensor]) -> None:
        self.probe = probe
        self.current = list(decoder_layers(model))
        self.matched = probe.match(model)
        self.originals = originals
        self.outputs: list[list[torch.Tensor]] = [[] for _ in self.current]
        self.modules: list[dict[str, list[float]]] = [{} for _ in self.current]  # [block][column] = [diff2, ref2]
        self.seen = [0] * len(self.current)
        self.rows = [0] * len(self.current)  # rows of the current batch that are probed windows, per block
        self.stride = [1] * len(self.current)  # token stride of the module error in the current batch
        self.timer = _Timer()

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
            self.stride[j] = max(1, hidden.shape[1] // MODULE_TOKENS) if hidden.dim() == 3 else 1

        return hook

    def _post_hook(self, j: int):
        def hook(module, args, output):
            with self.timer():
                out = _hidden(output)
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
                reference = torch.nn.functional.linear(x, original.to(x.device, x.dtype), module.bias).float()
                sums[0] += float((y.float() - reference).pow(2).sum())
                sums[1] += float(reference.pow(2).sum())

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
        device = next(block.parameters()).device
        diff = ref = 0.0
        with torch.no_grad():
            for inp, target, call in zip(inputs, targets, probe.calls[source], strict=True):
                out = _hidden(block(inp.to(device), *call.args, **call.kwargs)).float().cpu()
                diff += float((out - target).pow(2).sum())
                ref += float(target.pow(2).sum())
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


def module_column(name: str) -> str:
    """A linear layer's heatmap column: its own name in the block; experts pooled per projection."""
    parts = name.split(".")
    return f"experts.{parts[-1]}" if "experts" in parts else parts[-1]


def outlier_ratio(peaks: torch.Tensor) -> float:
    """Largest per-channel peak magnitude over the median one."""
    median = float(peaks.median())
    return float(peaks.max()) / median if median > 0 else math.inf


def relative_error(modified: list[torch.Tensor], base: list[torch.Tensor]) -> float:
    """||modified - base|| / ||base|| over all windows and tokens."""
    diff = math.fsum(float((m - b).pow(2).sum()) for m, b in zip(modified, base, strict=True))
    ref = math.fsum(float(b.pow(2).sum()) for b in base)
    return math.sqrt(diff / ref) if ref > 0 else 0.0


def summary(stats: list[LayerStat]) -> dict[str, float]:
    """Checkup metrics from `compare`: layer_error_max / _mean over matched blocks, mean |entropy shift|."""
    errors = [s.rel_error for s in stats if s.rel_error is not None]
    shifts = [abs(s.extra["attention_entropy_shift"]) for s in stats if "attention_entropy_shift" in s.extra]
    out: dict[str, float] = {}
    if errors:
        out["layer_error_max"] = max(errors)
        out["layer_error_mean"] = fmean(errors)
    if shifts:
        out["attention_entropy_shift"] = fmean(shifts)
    return out
