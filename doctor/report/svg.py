"""Deterministic SVG rendering with matplotlib's SVG backend (no pyplot, no global state).

Output is byte-stable for the same inputs and library versions: a fixed hash salt per plot, no date metadata,
text kept as text, and every id prefixed with the plot name so several SVGs can be inlined in one page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from doctor.results import CheckupResult, Measurement

# Colour-blind-safe palette (Okabe-Ito), assigned to series in a fixed order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
PASS_COLOR = "#1f7a3a"
FAIL_COLOR = "#a61b1b"
BAND_ALPHA = 0.15

_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "font.family": "sans-serif",
}
_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(url\(#|xlink:href="#|href="#)([^)"]+)')


@contextmanager
def figure(name: str, width: float = 6.4, height: float = 3.6, left: float = 0.7) -> Iterator[Figure]:
    """A fresh Figure under the report's rc settings; its hash salt is the plot name.

    Margins are fixed (`left` in inches) rather than computed by a layout engine, which would double the
    drawing time of every plot.
    """
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"model-doctor-{name}"}):
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=left / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.3 / height)
        FigureCanvasSVG(fig)
        yield fig


def to_svg(fig: Figure, name: str) -> str:
    """The figure as an `<svg>` element: no XML prolog, DOCTYPE or comments, ids namespaced by `name`."""
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"model-doctor-{name}"}):
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata=_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = _ID.sub(lambda m: f'id="{name}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", text)
    return text.strip()


def label(text: str) -> str:
    """A plot label from external text: mathtext is off, but '$' is escaped in case a backend re-enables it."""
    return text.replace("$", r"\$")


def series_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


class _PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, with '0.01' rather than '1e-02'."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def log_axis(ax, axis: str) -> None:
    """Log scale with plain-number tick labels (mathtext is off, so the default 10^x labels would be raw)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    # LogFormatter (not the Mathtext one) labels majors and, on short axes, a readable subset of minors.
    target.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    target.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def wants_log(values: list[float], span: float = 4.0) -> bool:
    """Log scale helps when the positive values span more than `span`x; it is impossible with non-positives."""
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > span


def error_bars(checkups: list[CheckupResult], key: str) -> tuple[list[float], list[float]] | None:
    """Asymmetric error-bar lengths from the metric intervals, or None when any interval is missing."""
    return error_bars_of([c.metrics[key] for c in checkups])


def error_bars_of(measurements: list[Measurement]) -> tuple[list[float], list[float]] | None:
    below, above = [], []
    for m in measurements:
        if m.lower is None or m.upper is None:
            return None
        below.append(max(0.0, m.value - m.lower))
        above.append(max(0.0, m.upper - m.value))
    return below, above
