"""Plots: present when their data is, deterministic, namespaced ids, and a correct Pareto front."""

from __future__ import annotations

import re

from conftest import build_examination
from hypothesis import given, settings
from hypothesis import strategies as st

from doctor.report import render_reports
from doctor.report.plots import make_plots, pareto_front, prune_series, quant_series, relative_size
from doctor.results import Examination

ALL_PLOTS = {"quant-ppl", "quant-kl", "prune-ppl", "prune-kl", "pareto", "layer-error", "kl-distribution"}


def test_every_plot_is_made_and_deterministic(exam: Examination, rendered: dict[str, str]) -> None:
    first = make_plots(exam)
    assert {p.name for p in first} == ALL_PLOTS
    assert all(rendered[p.file] == p.svg + "\n" for p in first), "a second rendering differs"
    for plot in first:
        assert plot.svg.startswith("<svg") and plot.svg.endswith("</svg>")
        assert "Date" not in plot.svg and "<!--" not in plot.svg and "<?xml" not in plot.svg


def test_sweeps_group_by_method(exam: Examination) -> None:
    quant = quant_series(exam)
    assert set(quant) == {"rtn g32", "gptq g32", "awq g32"}
    for points in quant.values():
        assert [x for x, _ in points] == [2.0, 3.0, 4.0, 8.0]
    prune = prune_series(exam)
    assert set(prune) == {"magnitude unstructured", "wanda unstructured"}  # the errored 2:4 run is left out


def test_ids_are_unique_across_inlined_plots(rendered: dict[str, str]) -> None:
    html = rendered["report.html"]
    ids = re.findall(r'\bid="([^"]+)"', html)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates
    targets = set(re.findall(r'(?:url\(#|href="#)([^)"]+)', html))
    assert targets <= set(ids), targets - set(ids)


def test_markdown_links_every_plot_file(rendered: dict[str, str]) -> None:
    files = rendered
    for name in ALL_PLOTS:
        assert f"plots/{name}.svg" in files
        assert f"](plots/{name}.svg)" in files["report.md"]


def test_no_plots_without_measurements() -> None:
    exam = build_examination()
    failed = [c.model_copy(update={"status": "error", "verdict": "error", "metrics": {}}) for c in exam.checkups]
    exam = exam.model_copy(update={"checkups": failed})
    assert make_plots(exam) == []
    files = render_reports(exam)
    assert "## Plots" not in files["report.md"] and 'id="plots"' not in files["report.html"]


def test_relative_size_combines_bits_and_sparsity(exam: Examination) -> None:
    by_id = {c.id: c for c in exam.checkups}
    assert relative_size(by_id["rtn-w4g32"], 32) == 4.5 / 32
    assert abs(relative_size(by_id["wanda-50"], 32) - 0.5) < 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 1), st.floats(1, 10)), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_non_dominated_points(pairs: list[tuple[float, float]]) -> None:
    points = [(x, y, str(i)) for i, (x, y) in enumerate(pairs)]
    front = pareto_front(points)
    names = {n for _, _, n in front}

    def dominated(p: tuple[float, float, str]) -> bool:
        return any(q[0] <= p[0] and q[1] < p[1] or q[0] < p[0] and q[1] <= p[1] for q in points)

    for p in front:
        assert not dominated(p)
    for p in points:
        if p[2] not in names:
            # Off the front: beaten, or a tie in both coordinates with a point already on it.
            assert dominated(p) or any((q[0], q[1]) == (p[0], p[1]) for q in front)


def _plot(plots, name):
    return next(p for p in plots if p.name == name)


def test_captions_name_only_what_is_drawn(exam: Examination) -> None:
    plots = make_plots(exam)
    kl = _plot(plots, "quant-kl").caption
    assert "No checkup sets a threshold on KL mean" in kl and "Dashed" not in kl and "Short bars" not in kl
    assert "Short bars" in _plot(plots, "quant-ppl").caption  # thresholds differ by bit width
    assert "Dashed: the threshold 1.3" in _plot(plots, "prune-ppl").caption  # every pruning checkup shares it


def test_a_band_needs_a_range(exam: Examination) -> None:
    lonely = [c if c.modification.get("bits") == 4 else c.model_copy(update={"expected": {}})
              for c in exam.checkups]
    caption = _plot(make_plots(exam.model_copy(update={"checkups": lonely})), "quant-ppl").caption
    assert "Shaded" not in caption and "predicted band" not in _plot(
        make_plots(exam.model_copy(update={"checkups": lonely})), "quant-ppl").svg


def test_sparsity_ticks_are_not_repeated(exam: Examination) -> None:
    nudged = [c.model_copy(update={"metrics": {**c.metrics, "sparsity": c.metrics["sparsity"].model_copy(
        update={"value": 0.4999})}}) if c.id == "wanda-50" else c for c in exam.checkups]
    svg = _plot(make_plots(exam.model_copy(update={"checkups": nudged})), "prune-ppl").svg
    ticks = re.findall(r"<text[^>]*>(0\.\d+)</text>", svg)
    assert ticks.count("0.5") == 1


def test_pareto_labels_every_point_without_overlap(exam: Examination) -> None:
    svg = _plot(make_plots(exam), "pareto").svg
    measured = [c.id for c in exam.checkups if c.status == "ok"]
    assert all(f">{cid}<" in svg for cid in measured)
    assert "safe zone" not in svg


def test_kl_distribution_is_always_logarithmic(exam: Examination) -> None:
    zero = exam.checkups[0].model_copy(update={"metrics": {**exam.checkups[0].metrics, **{
        k: exam.checkups[0].metrics[k].model_copy(update={"value": 0.0}) for k in ("kl_mean", "kl_median")}}})
    plot = _plot(make_plots(exam.model_copy(update={"checkups": [zero, *exam.checkups[1:]]})), "kl-distribution")
    assert "log scale" in plot.caption and "exactly 0 are drawn at the left edge" in plot.caption
