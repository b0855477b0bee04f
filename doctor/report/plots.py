"""The report's plots, each built from the Examination alone: sweeps, per-layer error, KL spread, Pareto view.

A plot whose data is absent (no quantization checkups, no KL measured, ...) is simply not made.
"""

from __future__ import annotations

import math

from doctor.report import format as fmt
from doctor.report.gate import checkup_verdict
from doctor.report.labels import place_labels
from doctor.report.svg import FAIL_COLOR, PASS_COLOR, figure, label, log_axis, series_color, to_svg, wants_log
from doctor.report.sweeps import Sweep, sweep_plot
from doctor.report.view import Plot, describe_text
from doctor.results import CheckupResult, Examination

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
    without = [c.id for c in _measured(exam) if not any(s.rel_error is not None for s in c.layers)]
    caption = (f"Relative reconstruction error of each decoder layer for the {len(worst)} checkups with the highest "
               f"{fmt.metric_label(rank_key)} among the {len(candidates)} that record it; a spike points at the "
               "layer that breaks." + (" Log scale." if wants_log(values) else ""))
    if without:
        caption += f" Not drawn, no per-layer record: {', '.join(without)}."
    caption += f" {text}"
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
        # KL spans decades, so the axis is always logarithmic; an exact 0 sits at a floor below the smallest value.
        positive = [v for values in stats.values() for v in values if v is not None and v > 0]
        floor = min(positive) / 3 if positive else None
        zeros = sum(1 for values in stats.values() for v in values if v is not None and v <= 0)
        if floor is not None:
            stats = {k: [None if v is None else max(v, floor) for v in values] for k, values in stats.items()}
        complete = all(v is not None for v in stats["kl_median"] + stats["kl_p99"])
        if complete:
            ax.hlines(ys, stats["kl_median"], stats["kl_p99"], color="#9aa3ad", linewidth=1.2)
            ax.scatter(stats["kl_median"], ys, marker="o", s=18, color=series_color(0), label="median", zorder=3)
            ax.scatter(stats["kl_p99"], ys, marker="|", s=70, color=FAIL_COLOR, label="p99", zorder=3)
        ax.scatter(stats["kl_mean"], ys, marker="D", s=18, color="#E69F00", label="mean", zorder=4)
        log = floor is not None
        if log:
            log_axis(ax, "x")
        ax.set_yticks(ys, [label(c.id) for c in rows])
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="KL(baseline ‖ modified) per token (nats)", title="KL divergence distribution")
        ax.legend(frameon=False, loc="lower right")
        svg = to_svg(fig, name)
    caption = ("Per-token KL divergence from the baseline, sorted by mean" + (", log scale" if log else "")
               + ("; the grey bar spans median to p99" if complete else "; median and p99 are not recorded for "
                  "every checkup, so only the mean is drawn")
               + (f"; {zeros} values of exactly 0 are drawn at the left edge ({floor:.1e})" if zeros and floor else "")
               + f". {text}")
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
    """Compression against quality: every checkup a labelled point, coloured by its own verdict, with the front."""
    dtype_bits = _DTYPE_BITS.get(exam.patient.dtype, 32)
    points = []
    for c in _measured(exam):
        size = relative_size(c, dtype_bits)
        if size is not None and _finite(c, "ppl_ratio"):
            points.append((size, c.metrics["ppl_ratio"].value, c))
    if len(points) < 2:
        return None
    name = "pareto"
    styles = (("pass", PASS_COLOR, "o", "met its thresholds"), ("fail", FAIL_COLOR, "X", "missed a threshold"),
              ("measured", "#7a828e", "s", "no threshold"))
    with figure(name, height=4.2) as fig:
        ax = fig.add_subplot()
        shown = []
        for verdict, color, marker, meaning in styles:
            chosen = [(x, y) for x, y, c in points if checkup_verdict(c) == verdict]
            if chosen:
                ax.scatter([x for x, _ in chosen], [y for _, y in chosen], color=color, marker=marker, s=26,
                           label=meaning, zorder=3)
                shown.append(meaning)
        front = pareto_front([(x, y, c.id) for x, y, c in points])
        ax.step([x for x, _, _ in front], [y for _, y, _ in front], where="post", color="#5b6472", linewidth=1,
                linestyle=":", label="Pareto front")
        log_x, log_y = wants_log([x for x, _, _ in points]), wants_log([y for _, y, _ in points])
        if log_x:
            log_axis(ax, "x")
        if log_y:
            log_axis(ax, "y")
        ax.set(xlabel=f"relative size of decoder weights (vs. {exam.patient.dtype})", ylabel="ppl ratio",
               title="Compression vs. quality")
        ax.margins(x=0.12, y=0.08)
        ax.autoscale_view()
        crowded = place_labels(ax, [(x, y, label(c.id)) for x, y, c in points])
        ax.legend(frameon=False, loc="upper right")
        svg = to_svg(fig, name)
    scales = " and ".join(a for a, on in (("x", log_x), ("y", log_y)) if on)
    caption = ("Each checkup's decoder-weight size relative to the baseline (effective bits over the baseline dtype, "
               "times the fraction of weights kept) against its perplexity ratio, labelled with its id; the marker "
               "says whether it met its own thresholds (" + ", ".join(shown) + "); the dotted line is the Pareto "
               "front (no other checkup is both smaller and better)." + (f" Log scale on {scales}." if scales else "")
               + (f" {crowded} labels sit close to others." if crowded else "") + f" {text}")
    return Plot(name=name, title="Compression vs. quality", caption=caption, svg=svg, file=f"plots/{name}.svg")


def make_plots(exam: Examination) -> list[Plot]:
    """Every plot the examination has data for, in report order."""
    text = f"Measured on {describe_text(exam.baseline.text)}."
    quant, prune = quant_series(exam), prune_series(exam)
    candidates = [
        sweep_plot("quant-ppl", "Perplexity ratio vs. bits", "Perplexity ratio per quantization method against "
                   "nominal bits per weight", quant, "ppl_ratio", "bits per weight", text),
        sweep_plot("quant-kl", "KL divergence vs. bits", "Mean per-token KL from the baseline per quantization "
                   "method against nominal bits per weight", quant, "kl_mean", "bits per weight", text),
        sweep_plot("prune-ppl", "Perplexity ratio vs. sparsity", "Perplexity ratio per pruning method against "
                   "realized sparsity", prune, "ppl_ratio", "sparsity", text),
        sweep_plot("prune-kl", "KL divergence vs. sparsity", "Mean per-token KL from the baseline per pruning "
                   "method against realized sparsity", prune, "kl_mean", "sparsity", text),
        pareto_plot(exam, text),
        layer_error_plot(exam, text),
        kl_distribution_plot(exam, text),
    ]
    return [p for p in candidates if p is not None]
