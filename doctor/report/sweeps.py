"""Sweep plots (a metric against bits or sparsity, one line per method) that say one thing each.

Each checkup's threshold is drawn on the point it judges (a short bar in the series' colour), or as one dashed
line when every point shares it; the predictor's band is shaded only where a series has an expectation at two
or more points (a range exists); the legend pairs each series with its band; the caption lists what is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D

from doctor.report import format as fmt
from doctor.report.svg import BAND_ALPHA, error_bars, figure, label, log_axis, series_color, to_svg, wants_log
from doctor.report.view import Plot
from doctor.results import CheckupResult

Sweep = dict[str, list[tuple[float, CheckupResult]]]
# Metrics whose values span orders of magnitude by nature: always a log axis (when positive), in every report.
ALWAYS_LOG = frozenset({"kl_mean", "kl_median", "kl_p99"})


@dataclass
class Drawn:
    """What a plot actually shows, for its caption."""

    bars: bool = False
    banded: list[str] = field(default_factory=list)
    unbanded: list[str] = field(default_factory=list)
    thresholds: str = ""  # "marks" | "line" | ""
    shared_bound: str = ""
    log: bool = False


def _finite(c: CheckupResult, key: str) -> bool:
    value = c.value(key)
    return value is not None and math.isfinite(value)


def use_log(key: str, values: list[float]) -> bool:
    if key in ALWAYS_LOG:
        return bool(values) and all(v > 0 for v in values)
    return wants_log(values)


def _band(ax, xs: list[float], cs: list[CheckupResult], key: str, color: str):
    """Shade the predictor's interval where it exists for at least two points; None otherwise."""
    rows = [(x, c.expected[key]) for x, c in zip(xs, cs, strict=True) if key in c.expected]
    if len({x for x, _ in rows}) < 2:
        return None
    return ax.fill_between([x for x, _ in rows], [e.lower for _, e in rows], [e.upper for _, e in rows],
                           color=color, alpha=BAND_ALPHA, linewidth=0)


def _bounds(c: CheckupResult, key: str) -> list[float]:
    return [b for t in c.thresholds if t.key == key for b in (t.min, t.max) if b is not None]


def _thresholds(ax, points: list[tuple[float, CheckupResult, str]], key: str, drawn: Drawn) -> list:
    """One dashed line when every point shares one threshold; else a bar on each judged point."""
    bounds = {(x, c.id): _bounds(c, key) for x, c, _ in points}
    distinct = {b for values in bounds.values() for b in values}
    if not distinct:
        return []
    if len(distinct) == 1 and all(bounds.values()):
        value = distinct.pop()
        drawn.thresholds, drawn.shared_bound = "line", f"{value:g}"
        line = ax.axhline(value, color="#a61b1b", linestyle="--", linewidth=1.0, alpha=0.8)
        return [(line, f"threshold {value:g} (every checkup)")]
    drawn.thresholds = "marks"
    for x, c, color in points:
        for value in bounds[(x, c.id)]:
            ax.plot([x], [value], marker="_", markersize=14, markeredgewidth=2.2, color=color, linestyle="none",
                    zorder=4)
    proxy = Line2D([], [], marker="_", markersize=12, markeredgewidth=2.2, color="#5b6472", linestyle="none")
    return [(proxy, "threshold of each checkup")]


def _ticks(ax, xs: list[float], key_decimals: int = 2) -> None:
    """One tick per distinct label: 0.2999 and 0.3 are both '0.30', so only one tick is drawn there."""
    by_label: dict[str, float] = {}
    for x in sorted(xs):
        by_label.setdefault(f"{x:.{key_decimals}f}".rstrip("0").rstrip(".") if x % 1 else f"{x:g}", x)
    ax.set_xticks(list(by_label.values()), list(by_label))


def sweep_plot(name: str, title: str, what: str, sweep: Sweep, key: str, xlabel: str, text: str) -> Plot | None:
    """One line per series with interval bars, the predictor's band where a range exists, and the thresholds."""
    sweep = {s: [(x, c) for x, c in pts if _finite(c, key)] for s, pts in sweep.items()}
    sweep = {s: pts for s, pts in sweep.items() if pts}
    if not sweep:
        return None
    drawn = Drawn()
    with figure(name) as fig:
        ax = fig.add_subplot()
        handles, labels, judged = [], [], []
        for i, (series, points) in enumerate(sweep.items()):
            xs, cs = [x for x, _ in points], [c for _, c in points]
            bars = error_bars(cs, key)
            drawn.bars |= bars is not None
            line = ax.errorbar(xs, [c.metrics[key].value for c in cs], yerr=bars, fmt="o-", color=series_color(i),
                               markersize=4, linewidth=1.4, capsize=2)
            band = _band(ax, xs, cs, key, series_color(i))
            (drawn.banded if band is not None else drawn.unbanded).append(series)
            handles.append((line, band) if band is not None else line)
            labels.append(label(series) + (" + predicted band" if band is not None else ""))
            judged += [(x, c, series_color(i)) for x, c in points]
        for handle, text_label in _thresholds(ax, judged, key, drawn):
            handles.append(handle)
            labels.append(text_label)
        values = [c.metrics[key].value for _, c, _ in judged]
        drawn.log = use_log(key, values)
        if drawn.log:
            log_axis(ax, "y")
        _ticks(ax, [x for x, _, _ in judged])
        ax.set(xlabel=xlabel, ylabel=fmt.metric_label(key), title=title)
        ax.legend(handles, labels, frameon=False, loc="best", handler_map={tuple: HandlerTuple(ndivide=1)})
        svg = to_svg(fig, name)
    return Plot(name=name, title=title, caption=caption(what, key, drawn, text), svg=svg, file=f"plots/{name}.svg")


def caption(what: str, key: str, drawn: Drawn, text: str) -> str:
    """The caption names only what the plot draws."""
    parts = [what + (" (log scale)." if drawn.log else ".")]
    if drawn.bars:
        parts.append("Bars: 95% bootstrap intervals over evaluation windows.")
    if drawn.banded:
        parts.append("Shaded: the predictor's 90% band for " + ", ".join(drawn.banded) + ".")
    if drawn.unbanded and drawn.banded:
        parts.append("No band for " + ", ".join(drawn.unbanded) + " (an expectation at fewer than two points).")
    if drawn.thresholds == "line":
        parts.append(f"Dashed: the threshold {drawn.shared_bound} on {fmt.metric_label(key)} that every checkup "
                     "shares.")
    elif drawn.thresholds == "marks":
        parts.append(f"Short bars in a series' colour: each checkup's own threshold on {fmt.metric_label(key)}, "
                     "drawn at the point it judges.")
    else:
        parts.append(f"No checkup sets a threshold on {fmt.metric_label(key)}.")
    return " ".join(parts + [text])
