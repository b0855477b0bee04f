"""Layer-wise localisation: where in the network a modification does its damage.

On a few evaluation windows the probe records each decoder block's input and output hidden states of the
baseline, and per layer:
- Block Influence, BI = 1 - mean cos(h_in, h_out) over tokens (Men et al., "ShortGPT: Layers in Large Language
  Models are More Redundant Than You Expect", arXiv 2403.03853, eq. 1);
- activation outliers of the inputs to the block's linear layers: the largest per-channel magnitude over the
  median one (the channel outliers of Dettmers et al., "LLM.int8()", arXiv 2208.07339, that make round-to-
  nearest quantization fail and motivate AWQ);
- attention entropy, the mean over heads and queries of -sum p log p of the attention probabilities (Zhai et
  al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", arXiv 2303.06296).
For a modified model it reports each block's relative output error against the baseline (accumulated through
the network) and its local error (the modified block alone, fed the baseline's input), plus the entropy
shift. Blocks are matched by identity, so removed and inserted blocks are reported as such. Given the
original weights of the linear layers a modification changed, it also reports each one's relative output
error ||(W' - W) x|| / ||W x|| on the activations it receives (extra `module_error.<module>`): where in the
block the damage enters.
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
from doctor.placement.offload import execution_device
from doctor.results import LayerStat

log = logging.getLogger(__name__)


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
        peak = x.detach().abs().float().reshape(-1, x.shape[-1]).amax(0).cpu()  # (in_features,)
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


def _forward(model: nn.Module, windows: torch.Tensor) -> Iterator[int]:
    device = execution_device(model)
    for i in range(windows.shape[0]):
        with torch.no_grad():
            model(windows[i : i + 1].to(device), use_cache=False)
        yield i


@dataclass
class _Call:
    """The arguments a block was called with on one window (the hidden states replaced on replay)."""

    args: tuple
    kwargs: dict


class LayerProbe:
    """Baseline hidden states and statistics per decoder block, for localising a modification's damage."""

    def __init__(self, layers: list[nn.Module], windows: torch.Tensor) -> None:
        self.layers = layers  # the baseline block objects, to recognise them after removal or insertion
        self.windows = windows
        self.inputs: list[list[torch.Tensor]] = [[] for _ in layers]  # [layer][window] (1, seq, hidden) cpu
        self.outputs: list[list[torch.Tensor]] = [[] for _ in layers]
        self.calls: list[list[_Call]] = [[] for _ in layers]
        self.running = [_Running() for _ in layers]

    @classmethod
    def capture(cls, model: nn.Module, windows: torch.Tensor) -> LayerProbe:
        """Run the (unmodified) model on `windows` (n, seq_len) and record every block."""
        layers = list(decoder_layers(model))
        probe = cls(layers, windows)
        handles = []
        for i, block in enumerate(layers):
            handles.append(block.register_forward_pre_hook(probe._pre_hook(i), with_kwargs=True))
            handles.append(block.register_forward_hook(probe._post_hook(i)))
            for name, linear in block_linears(block).items():
                handles.append(linear.register_forward_pre_hook(probe._linear_hook(i, name)))
            attn = attention_module(block)
            if attn is not None:
                handles.append(attn.register_forward_hook(_entropy_hook(probe.running[i])))
        with _hooks(handles), eager_attention(model):
            for _ in _forward(model, windows):
                pass
        return probe

    def _pre_hook(self, i: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            self.inputs[i].append(hidden.detach().float().cpu())
            self.calls[i].append(_Call(tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"}))

        return hook

    def _post_hook(self, i: int):
        def hook(module, args, output):
            out = _hidden(output).detach().float()
            inp = self.inputs[i][-1].to(out.device)
            cos = torch.nn.functional.cosine_similarity(inp, out, dim=-1)  # (1, seq)
            self.running[i].cos_sum += float(cos.sum())
            self.running[i].tokens += cos.numel()
            self.outputs[i].append(out.cpu())

        return hook

    def _linear_hook(self, i: int, name: str):
        def hook(module, args):
            self.running[i].add_channels(name, args[0])

        return hook

    def baseline_stats(self) -> list[LayerStat]:
        """Block Influence, activation outliers and attention entropy of each baseline block."""
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
            if run.entropy() is not None:
                extra["attention_entropy"] = run.entropy()
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

    def compare(self, model: nn.Module, originals: dict[int, torch.Tensor] | None = None) -> list[LayerStat]:
        """Per-block error of the modified `model` against the baseline on the same windows.

        rel_error: ||h_mod - h_base|| / ||h_base|| at the block's output (accumulated through the network);
        extra.local_error: the same for the modified block alone on the baseline's input; extra.attention_entropy
        and attention_entropy_shift (modified - baseline). Removed baseline blocks are reported with
        removed = 1 and local_error = the error of skipping them; inserted blocks with inserted = 1, numbered
        after the baseline's blocks (extra.position is where they sit in the modified model).
        """
        current = list(decoder_layers(model))
        matched = self.match(model)
        outputs: list[list[torch.Tensor]] = [[] for _ in current]
        running = [_Running() for _ in current]
        modules: list[dict[str, list[float]]] = [{} for _ in current]  # [block][column] = [diff^2, ref^2]
        handles = []
        for j, block in enumerate(current):
            handles.append(block.register_forward_hook(lambda m, a, o, j=j: outputs[j].append(_hidden(o).float().cpu())))
            handles += _module_error_hooks(block, originals or {}, modules[j])
            attn = attention_module(block)
            if attn is not None:
                handles.append(attn.register_forward_hook(_entropy_hook(running[j])))
        with eager_attention(model):
            with _hooks(handles):
                for _ in _forward(model, self.windows):
                    pass
            local = [self._local_error(block, matched, j) for j, block in enumerate(current)]
        stats = self._assemble(matched, outputs, running, local)
        return _with_module_errors(stats, matched, modules, len(self.layers))

    def _local_error(self, block: nn.Module, matched: list[int | None], j: int) -> float:
        base = matched[j]
        if base is not None:
            source, targets = base, self.outputs[base]
        else:  # an inserted block: fed what the baseline passed on at this point, ideally left unchanged
            before = next((matched[k] for k in range(j - 1, -1, -1) if matched[k] is not None), None)
            source = 0 if before is None else before
            targets = self.inputs[0] if before is None else self.outputs[before]
        device = next(block.parameters()).device
        diff = ref = 0.0
        with torch.no_grad():
            for w, target in enumerate(targets):
                call = self.calls[source][w]
                out = _hidden(block(target.to(device) if base is None else self.inputs[base][w].to(device),
                                    *call.args, **call.kwargs)).float().cpu()  # fmt: skip
                diff += float((out - target).pow(2).sum())
                ref += float(target.pow(2).sum())
        return math.sqrt(diff / ref) if ref > 0 else 0.0

    def _assemble(self, matched, outputs, running, local) -> list[LayerStat]:
        stats: list[LayerStat] = []
        seen: set[int] = set()
        for j, base in enumerate(matched):
            extra = {"local_error": local[j], "position": float(j)}
            entropy = running[j].entropy()
            if entropy is not None:
                extra["attention_entropy"] = entropy
            if base is None:  # numbered after the baseline's blocks so every `layer` stays unique
                extra["inserted"] = 1.0
                index = len(self.layers) + sum(m is None for m in matched[:j])
                stats.append(LayerStat(layer=index, name=f"inserted at position {j}", extra=extra))
                continue
            seen.add(base)
            self._removed_before(base, seen, stats)
            base_entropy = self.running[base].entropy()
            if entropy is not None and base_entropy is not None:
                extra["attention_entropy_shift"] = entropy - base_entropy
                extra["attention_entropy_change"] = abs(entropy - base_entropy)
            error = relative_error(outputs[j], self.outputs[base])
            stats.append(LayerStat(layer=base, name=f"layers.{base}", rel_error=error, extra=extra))
        self._removed_before(len(self.layers), seen, stats)
        if len(matched) != len(self.layers) or any(m is None for m in matched):
            log.info("layer probe: %d of %d baseline blocks matched, %d inserted", len(seen), len(self.layers),
                     sum(m is None for m in matched))  # fmt: skip
        return stats

    def _removed_before(self, limit: int, seen: set[int], stats: list[LayerStat]) -> None:
        """Report baseline blocks below `limit` that no longer exist (removed), once each."""
        reported = {s.layer for s in stats if s.extra.get("removed")}
        for i in range(limit):
            if i not in seen and i not in reported:
                skip = relative_error(self.inputs[i], self.outputs[i])
                stats.append(LayerStat(layer=i, name=f"layers.{i} (removed)", extra={"removed": 1.0, "local_error": skip}))
                reported.add(i)


def module_column(name: str) -> str:
    """A linear layer's heatmap column: its own name in the block; experts pooled per projection."""
    parts = name.split(".")
    return f"experts.{parts[-1]}" if "experts" in parts else parts[-1]


def _module_error_hooks(block: nn.Module, originals: dict[int, torch.Tensor], sums: dict[str, list[float]]):
    """Forward hooks that add ||y' - y||^2 and ||y||^2 per changed linear, y from its original weight."""
    handles = []
    for name, linear in block_linears(block).items():
        weight = getattr(linear, "weight", None)
        original = None if weight is None else originals.get(id(weight))
        if original is None or original.shape != weight.shape:
            continue

        if type(linear).__name__ == "Conv1D":  # GPT-2 stores the transpose
            original = original.t()

        column = module_column(name)

        def hook(module, args, output, original=original, column=column):
            reference = torch.nn.functional.linear(args[0], original.to(args[0].device), module.bias)
            acc = sums.setdefault(column, [0.0, 0.0])
            acc[0] += float((output.float() - reference.float()).pow(2).sum())
            acc[1] += float(reference.float().pow(2).sum())

        handles.append(linear.register_forward_hook(hook))
    return handles


def _with_module_errors(stats: list[LayerStat], matched, modules, n_base: int) -> list[LayerStat]:
    by_layer = {s.layer: s for s in stats}
    for j, sums in enumerate(modules):
        base = matched[j]
        layer = base if base is not None else n_base + sum(m is None for m in matched[:j])
        stat = by_layer.get(layer)
        for column, (diff, ref) in sums.items():
            if stat is not None and ref > 0:
                stat.extra[f"module_error.{column}"] = math.sqrt(diff / ref)
    return stats


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
