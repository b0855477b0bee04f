"""Where the damage enters: a decoder layers x modules heatmap of relative output error per checkup.

Cells are `module_error.<module>` from the layer probe: ||(W' - W) x|| / ||W x|| of each linear layer the
modification changed, on the activations it receives. One heatmap per checkup, for the most damaging ones.
"""

from __future__ import annotations

import math

import numpy as np

from doctor.report.svg import figure, to_svg
from doctor.report.view import Plot
from doctor.results import CheckupResult, Examination

PREFIX = "module_error."
# the usual order inside a block; other columns (fused projections, experts, GPT-2 names) follow alphabetically
ORDER = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj", "gate_up_proj", "down_proj")
MAX_HEATMAPS = 4


def module_matrix(c: CheckupResult) -> tuple[list[int], list[str], np.ndarray] | None:
    """(layers, modules, errors[layer, module]) with NaN where a module was not changed; None when empty."""
    cells = {(s.layer, k[len(PREFIX):]): v for s in c.layers for k, v in s.extra.items() if k.startswith(PREFIX)}
    if not cells:
        return None
    layers = sorted({layer for layer, _ in cells})
    names = {m for _, m in cells}
    modules = [m for m in ORDER if m in names] + sorted(names - set(ORDER))
    grid = np.full((len(layers), len(modules)), np.nan)
    for (layer, module), value in cells.items():
        grid[layers.index(layer), modules.index(module)] = value
    return layers, modules, grid


def _damage(c: CheckupResult) -> float:
    for key in ("ppl_ratio", "kl_mean", "layer_error_max"):
        value = c.value(key)
        if value is not None and math.isfinite(value):
            return value
    return 0.0


def module_heatmaps(exam: Examination, text: str) -> list[Plot]:
    """One layers x modules heatmap for each of the most damaging checkups that changed linear layers."""
    measured = [c for c in exam.checkups if c.status == "ok" and module_matrix(c) is not None]
    measured.sort(key=lambda c: (-_damage(c), c.id))
    return [_heatmap(c, text) for c in measured[:MAX_HEATMAPS]]


def _heatmap(c: CheckupResult, text: str) -> Plot:
    layers, modules, grid = module_matrix(c)
    name = "module-error-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in c.id)
    height = min(9.0, 1.2 + 0.16 * len(layers))
    with figure(name, width=1.8 + 0.62 * len(modules), height=height, left=0.6) as fig:
        ax = fig.add_subplot()
        # cells as vector paths: imshow would embed a PNG, a data: request the self-contained page must not make
        image = ax.pcolormesh(np.ma.masked_invalid(grid), cmap="viridis", edgecolors="none")
        ax.invert_yaxis()  # layer 0 on top, as the tables read
        ax.set_xticks([i + 0.5 for i in range(len(modules))], modules, rotation=45, ha="right")
        step = max(1, len(layers) // 16)
        ax.set_yticks([i + 0.5 for i in range(0, len(layers), step)], [str(x) for x in layers[::step]])
        ax.grid(visible=False)
        ax.set(ylabel="decoder layer", title=f"Relative output error, {c.id}")
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.solids.set_rasterized(False)  # matplotlib rasterizes the colour ramp by default
        fig.subplots_adjust(bottom=min(0.45, 0.9 / height))
        svg = to_svg(fig, name)
    worst = np.unravel_index(np.nanargmax(grid), grid.shape)
    caption = (f"{c.id}: relative output error ||(W'-W)x|| / ||Wx|| of each changed linear layer on the activations "
               f"it receives, per decoder layer (rows) and module (columns); largest in layer {layers[worst[0]]}, "
               f"{modules[worst[1]]} ({grid[worst]:.3g}). {text}")
    return Plot(name=name, title=f"Where the damage enters: {c.id}", caption=caption, svg=svg,
                file=f"plots/{name}.svg")
