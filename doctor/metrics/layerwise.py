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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import fmean

import torch
from torch import nn

from doctor.compress.adapters import block_linears, decoder_layers
from doctor.metrics.layer_comparison import Comparison, Timer, hidden_states, module_column
from doctor.placement.offload import execution_device
from doctor.results import LayerStat

log = logging.getLogger(__name__)
PROBE_WINDOWS = 4  # windows whose block outputs are kept for the per-layer error
LOCAL_WINDOWS = 1  # windows on which each block is replayed for its local error (a block pass each)
LOCAL_TOKENS = 256  # positions of those windows the replay covers: a causal prefix, recorded by a short forward


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



class LayerProbe:
    """Baseline hidden states and statistics per decoder block, for localising a modification's damage.

    The probe rides on evaluation passes through hooks: `recording` on the baseline pass keeps each block's
    output on the first `limit` windows (its input and call on the first `local` windows, to replay blocks for
    their local error) and gathers Block Influence and input outliers over every window; `comparing` on a
    checkup's pass keeps the modified blocks' outputs and each changed linear layer's error. Only attention
    entropy needs a pass of its own (eager attention returns the probabilities): `entropies`, on request.
    """

    def __init__(self, layers: list[nn.Module], windows: torch.Tensor, *, batch_size: int = 4,
                 limit: int = PROBE_WINDOWS, local: int = LOCAL_WINDOWS, model: nn.Module | None = None) -> None:
        self.layers = layers  # the baseline block objects, to recognise them after removal or insertion
        self.windows = windows  # every evaluation window, batched as the evaluation pass batches them
        self.batch_size = batch_size
        self.limit = max(1, min(limit, windows.shape[0]))
        self.local = max(1, min(local, self.limit))
        # with the model at hand, blocks are replayed on a prefix of the local windows, recorded after the pass
        self.model = model
        self.local_tokens = windows.shape[1] if model is None else min(LOCAL_TOKENS, windows.shape[1])
        self.inputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][chunk] (rows, seq, hidden) cpu
        self.calls: list[list[_Call]] = [[] for _ in layers]  # [layer][chunk], for the first `local` windows
        self.outputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][chunk], first `limit` windows
        self.prefix_outputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][chunk], when a prefix
        self.running = [_Running() for _ in layers]
        self.entropy: list[float | None] = [None for _ in layers]  # from `entropies`, when asked for
        self.timer = Timer()

    @classmethod
    def capture(cls, model: nn.Module, windows: torch.Tensor, *, batch_size: int = 4, attention: bool = False,
                **limits) -> LayerProbe:
        """Record the (unmodified) model on `windows` (n, seq_len) with a pass of the probe's own."""
        probe = cls(list(decoder_layers(model)), windows, batch_size=batch_size, model=model, **limits)
        with probe.recording():
            probe.run(model)
        if attention:
            probe.entropy = probe.entropies(model)
        return probe

    def run(self, model: nn.Module) -> None:
        """The decoder body over the probed windows, batched as the evaluation pass batches them."""
        body = getattr(model, "base_model", model)
        device = execution_device(model)
        with torch.no_grad():
            for w0 in range(0, self.limit, self.batch_size):
                body(input_ids=self.windows[w0 : w0 + self.batch_size].to(device), use_cache=False)

    @property
    def prefix(self) -> bool:
        """Whether blocks are replayed on a prefix of the local windows rather than on the whole windows."""
        return self.local_tokens < self.windows.shape[1]

    @contextmanager
    def recording(self) -> Iterator[LayerProbe]:
        """Hooks that record the baseline blocks during a pass over the evaluation windows (in order); then, when
        the replay covers a prefix, a short forward over it records what the replays need."""
        seen = [0] * len(self.layers)
        called = [0] * len(self.layers)  # windows whose call was kept, per block (replayed whole: no prefix)
        pending: list[torch.Tensor | None] = [None] * len(self.layers)
        handles = []
        for i, block in enumerate(self.layers):
            record_call = None if self.prefix else self._record_call(i, called)
            handles.append(block.register_forward_pre_hook(self._pre_hook(i, pending, record_call), with_kwargs=True))
            handles.append(block.register_forward_hook(self._post_hook(i, seen, pending)))
            for name, linear in block_linears(block).items():
                handles.append(linear.register_forward_pre_hook(self._linear_hook(i, name)))
        with _hooks(handles):
            yield self
        if self.prefix:
            self._record_prefix()

    def _record_prefix(self) -> None:
        """Each block's input, call and output on the first `local_tokens` positions of the local windows.

        Causal attention makes a block's output on a prefix that of the whole window at those positions, so the
        replays (one per block and checkup) cost local_tokens / seq_len of a window's blocks instead of all of it.
        """
        seen = [0] * len(self.layers)
        handles = []
        for i, block in enumerate(self.layers):
            handles.append(block.register_forward_pre_hook(self._record_call(i, seen), with_kwargs=True))
            handles.append(block.register_forward_hook(self._record_prefix_output(i)))
        body = getattr(self.model, "base_model", self.model)
        ids = self.windows[: self.local, : self.local_tokens].to(execution_device(self.model))
        with self.timer(), _hooks(handles), torch.no_grad():
            body(input_ids=ids, use_cache=False)

    def _record_prefix_output(self, i: int):
        def hook(module, args, output):
            self.prefix_outputs[i].append(hidden_states(output).detach().float().cpu())

        return hook

    def _record_call(self, i: int, seen: list[int]):
        """A pre-hook keeping block i's input and call on the first `local` windows, for its replays."""
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            batch = hidden.shape[0]
            rows = min(batch, self.local - seen[i])
            if rows > 0:
                self.inputs[i].append(hidden[:rows].detach().float().cpu())
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                self.calls[i].append(_Call(_first_rows(tuple(args[1:]), rows, batch), _first_rows(rest, rows, batch)))
            seen[i] += batch

        return hook

    def _pre_hook(self, i: int, pending: list, record_call):
        def hook(module, args, kwargs):
            with self.timer():
                hidden = args[0] if args else kwargs["hidden_states"]
                pending[i] = hidden
                if record_call is not None:
                    record_call(module, args, kwargs)

        return hook

    def _post_hook(self, i: int, seen: list[int], pending: list):
        def hook(module, args, output):
            with self.timer():
                out = hidden_states(output).detach()
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
        device = execution_device(model)
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
        """Baseline block i's outputs on the replayed windows (or their prefix), chunked as its inputs."""
        if self.prefix:
            return self.prefix_outputs[i]
        return [out[: inp.shape[0]] for inp, out in zip(self.inputs[i], self.outputs[i], strict=False)]



def outlier_ratio(peaks: torch.Tensor) -> float:
    """Largest per-channel peak magnitude over the median one."""
    median = float(peaks.median())
    return float(peaks.max()) / median if median > 0 else math.inf



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
