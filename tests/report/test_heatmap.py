"""The layers x modules heatmap: made for checkups with per-module error, in both reports, cells where measured."""

from __future__ import annotations

import math

from conftest import build_examination

from doctor.report import render_reports
from doctor.report.heatmap import MAX_HEATMAPS, module_heatmaps, module_matrix
from doctor.results import LayerStat

MODULES = ("down_proj", "q_proj", "experts.w2", "gate_proj", "k_proj")


def _with_modules(exam, hot=(2, "down_proj")):
    checkups = []
    for c in exam.checkups:
        if c.status == "ok" and c.modification.get("kind") == "quantize":
            layers = [LayerStat(layer=i, extra={f"module_error.{m}": (0.5 if (i, m) == hot else 0.01 * (i + 1))
                                                for m in MODULES}) for i in range(4)]
            c = c.model_copy(update={"layers": layers})
        checkups.append(c)
    return exam.model_copy(update={"checkups": checkups})


def test_matrix_orders_modules_as_in_a_block_and_leaves_gaps_empty():
    exam = _with_modules(build_examination())
    c = next(c for c in exam.checkups if c.layers and "module_error.q_proj" in c.layers[0].extra)
    c.layers[1].extra.pop("module_error.k_proj")
    layers, modules, grid = module_matrix(c)
    assert layers == [0, 1, 2, 3]
    assert modules == ["q_proj", "k_proj", "gate_proj", "down_proj", "experts.w2"]
    assert grid[2, modules.index("down_proj")] == 0.5
    assert math.isnan(grid[1, modules.index("k_proj")])


def test_heatmaps_for_the_worst_checkups_in_html_and_markdown():
    exam = _with_modules(build_examination())
    plots = module_heatmaps(exam, "")
    assert 0 < len(plots) <= MAX_HEATMAPS
    assert "layer 2, down_proj (0.5)" in plots[0].caption
    files = render_reports(exam)
    for p in plots:
        assert p.svg in files["report.html"]
        assert f"]({p.file})" in files["report.md"] and files[p.file].startswith("<svg")


def test_no_heatmap_without_module_errors():
    assert module_heatmaps(build_examination(), "") == []
