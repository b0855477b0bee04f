"""The report's plots, each built from the Examination alone: sweeps, per-layer error, KL spread, Pareto view.

A plot whose data is absent (no quantization checkups, no KL measured, ...) is simply not made.
"""

from __future__ import annotations

import math

from matplotlib.patches import Patch

from doctor.report import format as fmt
from doctor.report.svg import (
    BAND_ALPHA,
    FAIL_COLOR,
    PASS_COLOR,
    error_bars,
    figure,
    label,
    log_axis,
    series_color,
    threshold_lines,
    to_svg,
    wants_log,
)
from doctor.report.view import Plot, describe_text
from doctor.results import CheckupResult, Examination

Sweep = dict[str, list[tuple[float, CheckupResult]]]
WORST_LAYER_CHECKUPS = 4
_DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16}


def _finite(c: CheckupResult, key: str) -> bool:
    value = c.value(key)
    return value is not None and math.isfinite(value)


def _measured(exam: Examination) -> list[CheckupResult]:
    return [c for c in exam.checkups if c.status == "ok"]


def quant_series(exam: Examination) -> Sweep:
    """Quantization checkups grouped by method and grouping, x = nominal bits."""
    sweep: Sweep = {}
    for c in _measured(exam):
        mod = c.modification
        if mod.get("kind") != "quantize" or not isinstance(mod.get("bits"), int):
            continue
        name = f"{mod.get('method', 'rtn')} {'g' + str(mod['group_size']) if mod.get('group_size') else 'per-channel'}"
        sweep.setdefault(name + (" sym" if mod.get("symmetric") else ""), []).append((float(mod["bits"]), c))
    return _sorted(sweep)


def prune_series(exam: Examination) -> Sweep:
    """Pruning checkups grouped by method and structure, x = realized sparsity (requested when not recorded)."""
    sweep: Sweep = {}
    for c in _measured(exam):
        mod = c.modification
        if mod.get("kind") != "prune":
            continue
        x = c.value("sparsity")
        if x is None:
            x = c.realized.get("sparsity", c.realized.get("target_sparsity", mod.get("sparsity")))
        if x is None and mod.get("n") and mod.get("m"):
            x = mod["n"] / mod["m"]
        if isinstance(x, (int, float)):
            sweep.setdefault(f"{mod.get('method', 'magnitude')} {mod.get('structure', 'unstructured')}", []).append(
                (float(x), c))
    return _sorted(sweep)


def _sorted(sweep: Sweep) -> Sweep:
    return {name: sorted(points, key=lambda p: (p[0], p[1].id)) for name, points in sorted(sweep.items())}


def sweep_plot(name: str, title: str, caption: str, sweep: Sweep, key: str, xlabel: str) -> Plot | None:
    """One line per series with interval error bars, the predictor's band, and the thresholds on `key`."""
    sweep = {s: [(x, c) for x, c in pts if _finite(c, key)] for s, pts in sweep.items()}
    sweep = {s: pts for s, pts in sweep.items() if pts}
    if not sweep:
        return None
    with figure(name) as fig:
        ax = fig.add_subplot()
        everything: list[CheckupResult] = []
        banded = False
        for i, (series, points) in enumerate(sweep.items()):
            xs, cs = [x for x, _ in points], [c for _, c in points]
            ys = [c.metrics[key].value for c in cs]
            bars = error_bars(cs, key)
            ax.errorbar(xs, ys, yerr=bars, fmt="o-", color=series_color(i), label=label(series), markersize=4,
                        linewidth=1.4, capsize=2)
            banded |= _band(ax, xs, cs, key, series_color(i))
            everything += cs
        threshold_lines(ax, everything, key)
        values = [c.metrics[key].value for c in everything]
        if wants_log(values):
            log_axis(ax, "y")
        ax.set_xticks(sorted({x for pts in sweep.values() for x, _ in pts}))
        ax.set(xlabel=xlabel, ylabel=fmt.metric_label(key), title=title)
        handles, labels = ax.get_legend_handles_labels()
        if banded:
            handles.append(Patch(color="#777777", alpha=BAND_ALPHA * 2, linewidth=0))
            labels.append("predicted band")
        ax.legend(handles, labels, frameon=False, loc="best")
        svg = to_svg(fig, name)
    return Plot(name=name, title=title, caption=caption, svg=svg, file=f"plots/{name}.svg")


def _band(ax, xs: list[float], cs: list[CheckupResult], key: str, color: str) -> bool:
    """Shade the predictor's interval where it exists for at least two points of the series."""
    rows = [(x, c.expected[key]) for x, c in zip(xs, cs, strict=True) if key in c.expected]
    if len(rows) < 2:
        for x, e in rows:
            ax.vlines(x, e.lower, e.upper, color=color, alpha=0.35, linewidth=3)
        return bool(rows)
    ax.fill_between([x for x, _ in rows], [e.lower for _, e in rows], [e.upper for _, e in rows],
                    color=color, alpha=BAND_ALPHA, linewidth=0)
    return True


def layer_error_plot(exam: Examination, text: str) -> Plot | None:
    """Relative reconstruction error per decoder layer for the most damaging checkups."""
    rank_key = "ppl_ratio" if any(_finite(c, "ppl_ratio") for c in exam.checkups) else "kl_mean"
    candidates = [c for c in _measured(exam) if any(s.rel_error is not None for s in c.layers)]
    candidates.sort(key=lambda c: (-(c.value(rank_key) or 0.0) if _finite(c, rank_key) else 0.0, c.id))
    worst = candidates[:WORST_LAYER_CHECKUPS]
    if not worst:
        return None
    name = "layer-error"
    with figure(name) as fig:
        ax = fig.add_subplot()
        values = []
        for i, c in enumerate(worst):
            stats = sorted((s.layer, s.rel_error) for s in c.layers if s.rel_error is not None)
            values += [v for _, v in stats]
            ax.plot([x for x, _ in stats], [v for _, v in stats], "o-", color=series_color(i), markersize=4,
                    label=label(c.id))
        if wants_log(values):
            log_axis(ax, "y")
        layers = sorted({s.layer for c in worst for s in c.layers})
        ax.set_xticks(layers)
        ax.set(xlabel="decoder layer", ylabel="relative output error", title="Per-layer error, worst checkups")
        ax.legend(frameon=False, loc="best")
        svg = to_svg(fig, name)
    caption = (f"Relative reconstruction error of each decoder layer for the {len(worst)} checkups with the highest "
               f"{fmt.metric_label(rank_key)}; a spike points at the layer that breaks. {text}")
    return Plot(name=name, title="Per-layer error", caption=caption, svg=svg, file=f"plots/{name}.svg")


def kl_distribution_plot(exam: Examination, text: str) -> Plot | None:
    """Median, mean and 99th percentile of the per-token KL for every checkup that measured it."""
    rows = sorted((c for c in _measured(exam) if _finite(c, "kl_mean")), key=lambda c: (c.value("kl_mean"), c.id))
    if not rows:
        return None
    name = "kl-distribution"
    left = 0.3 + 0.065 * max(len(c.id) for c in rows)  # room for the longest checkup id, in inches
    with figure(name, height=max(2.6, 0.9 + 0.24 * len(rows)), left=min(left, 3.0)) as fig:
        ax = fig.add_subplot()
        ys = list(range(len(rows)))
        stats = {key: [c.value(key) for c in rows] for key in ("kl_median", "kl_mean", "kl_p99")}
        complete = all(v is not None for v in stats["kl_median"] + stats["kl_p99"])
        if complete:
            ax.hlines(ys, stats["kl_median"], stats["kl_p99"], color="#9aa3ad", linewidth=1.2)
            ax.scatter(stats["kl_median"], ys, marker="o", s=18, color=series_color(0), label="median", zorder=3)
            ax.scatter(stats["kl_p99"], ys, marker="|", s=70, color=FAIL_COLOR, label="p99", zorder=3)
        ax.scatter(stats["kl_mean"], ys, marker="D", s=18, color="#E69F00", label="mean", zorder=4)
        shown = [v for key in stats for v in stats[key] if v is not None]
        if wants_log(shown):
            log_axis(ax, "x")
        ax.set_yticks(ys, [label(c.id) for c in rows])
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="KL(baseline ‖ modified) per token (nats)", title="KL divergence distribution")
        ax.legend(frameon=False, loc="lower right")
        svg = to_svg(fig, name)
    caption = f"Per-token KL divergence from the baseline, sorted by mean; the bar spans median to p99. {text}"
    return Plot(name=name, title="KL distribution", caption=caption, svg=svg, file=f"plots/{name}.svg")



def relative_size(c: CheckupResult, dtype_bits: int) -> float | None:
    """Decoder weights kept, relative to the baseline: effective bits / dtype bits x non-zeros (or params) kept."""
    bits = c.value("effective_bits") or c.realized.get("effective_bits")
    sparsity = c.value("sparsity")
    if sparsity is None:
        sparsity = c.realized.get("sparsity")
    params_ratio = c.value("params_ratio")
    if bits is None and sparsity is None and params_ratio is None:
        return None
    size = float(bits) / dtype_bits if isinstance(bits, (int, float)) else 1.0
    if isinstance(sparsity, (int, float)) and sparsity > 0:
        size *= 1.0 - float(sparsity)
    elif params_ratio is not None:
        size *= params_ratio
    return size


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points no other point beats on both size and ppl ratio (smaller is better on both), by size."""
    front: list[tuple[float, float, str]] = []
    for x, y, name in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y, name))
    return front


def pareto_plot(exam: Examination, text: str) -> Plot | None:
    """Compression against quality: every checkup as a point, passing ones green, with the Pareto front."""
    dtype_bits = _DTYPE_BITS.get(exam.patient.dtype, 32)
    points = []
    for c in _measured(exam):
        size = relative_size(c, dtype_bits)
        if size is not None and _finite(c, "ppl_ratio"):
            points.append((size, c.metrics["ppl_ratio"].value, c))
    if len(points) < 2:
        return None
    name = "pareto"
    with figure(name, height=4.0) as fig:
        ax = fig.add_subplot()
        limits = [t.max for _, _, c in points for t in c.thresholds if t.key == "ppl_ratio" and t.max is not None]
        if limits:
            ax.axhspan(min(y for _, y, _ in points + [(0, min(limits), None)]) / 1.02, min(limits),
                       color=PASS_COLOR, alpha=0.08, linewidth=0, label=f"safe zone: ppl ratio ≤ {min(limits):g}")
        for verdict, color, marker in (("pass", PASS_COLOR, "o"), ("fail", FAIL_COLOR, "X")):
            chosen = [(x, y) for x, y, c in points if (c.verdict == "pass") == (verdict == "pass")]
            if chosen:
                ax.scatter([x for x, _ in chosen], [y for _, y in chosen], color=color, marker=marker, s=26,
                           label=f"{verdict}ed checkups", zorder=3)
        front = pareto_front([(x, y, c.id) for x, y, c in points])
        ax.step([x for x, _, _ in front], [y for _, y, _ in front], where="post", color="#5b6472", linewidth=1,
                linestyle=":", label="Pareto front")
        for x, y, cid in front:
            ax.annotate(label(cid), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#3b3f46")
        if wants_log([x for x, _, _ in points]):
            log_axis(ax, "x")
        if wants_log([y for _, y, _ in points]):
            log_axis(ax, "y")
        ax.set(xlabel=f"relative size of decoder weights (vs. {exam.patient.dtype})", ylabel="ppl ratio",
               title="Compression vs. quality")
        ax.legend(frameon=False, loc="best")
        svg = to_svg(fig, name)
    caption = ("Each checkup's decoder-weight size relative to the baseline (effective bits over the baseline "
               "dtype, times the fraction of weights kept) against its perplexity ratio; the shaded band is "
               f"below the strictest ppl-ratio threshold and the dotted line is the Pareto front. {text}")
    return Plot(name=name, title="Compression vs. quality", caption=caption, svg=svg, file=f"plots/{name}.svg")


def make_plots(exam: Examination) -> list[Plot]:
    """Every plot the examination has data for, in report order."""
    text = f"Measured on {describe_text(exam.baseline.text)}."
    quant, prune = quant_series(exam), prune_series(exam)
    band = " Shaded: the predictor's interval; dashed: thresholds; bars: bootstrap intervals."
    candidates = [
        sweep_plot("quant-ppl", "Perplexity ratio vs. bits", "Perplexity ratio per quantization method against "
                   f"bits per weight.{band} {text}", quant, "ppl_ratio", "bits per weight"),
        sweep_plot("quant-kl", "KL divergence vs. bits", "Mean per-token KL from the baseline per quantization "
                   f"method against bits per weight.{band} {text}", quant, "kl_mean", "bits per weight"),
        sweep_plot("prune-ppl", "Perplexity ratio vs. sparsity", "Perplexity ratio per pruning method against "
                   f"realized sparsity.{band} {text}", prune, "ppl_ratio", "sparsity"),
        sweep_plot("prune-kl", "KL divergence vs. sparsity", "Mean per-token KL from the baseline per pruning "
                   f"method against realized sparsity.{band} {text}", prune, "kl_mean", "sparsity"),
        pareto_plot(exam, text),
        layer_error_plot(exam, text),
        kl_distribution_plot(exam, text),
    ]
    from doctor.report.heatmap import module_heatmaps

    return [p for p in candidates if p is not None] + module_heatmaps(exam, text)
