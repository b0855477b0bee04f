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
