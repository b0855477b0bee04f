"""Prior quantization of a whole model: every linear's grid, summarized as layouts, layers and a histogram."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

from doctor.history.grid import GridFit, fit_grid
from doctor.placement.offload import materialized

_LAYER = re.compile(r"\.(\d+)\.")


@dataclass
class History:
    """What the weights say about earlier quantization (empty `layouts`: none found)."""

    linears: int
    layouts: list[dict] = field(default_factory=list)  # one per (bits, group, scheme), most weights first
    levels_per_group: dict[str, int] = field(default_factory=dict)  # distinct values per group -> groups
    layers: str = ""  # decoder layers holding on-grid linears, as ranges ("0-29")
    off_grid: list[str] = field(default_factory=list)  # linears not on any grid (first few)
    gguf_types: dict[str, int] = field(default_factory=dict)

    @property
    def on_grid(self) -> int:
        return sum(layout["linears"] for layout in self.layouts)

    @property
    def dominant(self) -> dict | None:
        return self.layouts[0] if self.layouts else None

    def to_record(self) -> dict:
        return {"linears": self.linears, "on_grid": self.on_grid, "layouts": self.layouts,
                "levels_per_group": self.levels_per_group, "layers": self.layers, "off_grid": self.off_grid,
                "gguf_types": self.gguf_types}


def ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out: list[str] = []
    for i in sorted(set(indices)):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ", ".join(out)


def linear_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(module name, weight) of every linear, tied weights once."""
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.dim() == 2 and id(weight) not in seen:
            seen.add(id(weight))
            out.append((name, weight))
    return out


@torch.no_grad()
def detect_history(model: torch.nn.Module, gguf_types: dict[str, str] | None = None,
                   weights: list[tuple[str, torch.Tensor]] | None = None) -> History:
    """Fit every linear's grid; `gguf_types` (tensor name -> GGML type) records the file's own block types;
    `weights` replaces the model's own (e.g. float32 copies of a model loaded in half precision)."""
    groups: dict[tuple, list[tuple[str, int, GridFit]]] = defaultdict(list)  # (name, numel, fit)
    off: list[str] = []
    levels: Counter[int] = Counter()
    layers: list[int] = []
    linears = weights if weights is not None else linear_weights(model)
    for name, weight in linears:
        if weight.device.type == "meta":  # an offloaded linear: read from its storage, one at a time
            with materialized(model.get_submodule(name)):
                fit = fit_grid(model.get_submodule(name).weight)
        else:
            fit = fit_grid(weight)
        if fit.group_size is None:
            off.append(name)
            continue
        per_row = fit.group_size == weight.shape[1]
        groups[(fit.bits, "row" if per_row else fit.group_size, fit.scheme)].append((name, weight.numel(), fit))
        levels.update(fit.levels)
        if match := _LAYER.search(name):
            layers.append(int(match.group(1)))
    layouts = []
    for (bits, size, scheme), members in groups.items():
        layouts.append({
            "bits": bits, "group_size": size, "scheme": scheme, "linears": len(members),
            "params": sum(n for _, n, _ in members), "examples": [n for n, _, _ in members[:3]],
        })
    layouts.sort(key=lambda item: -item["params"])
    return History(
        linears=len(linears), layouts=layouts, levels_per_group={str(k): v for k, v in sorted(levels.items())},
        layers=ranges(layers), off_grid=off[:5], gguf_types=dict(Counter((gguf_types or {}).values())),
    )
