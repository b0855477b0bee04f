"""report.md: the same content as tables, fit for a pull request; plots are linked SVG files beside it."""

from __future__ import annotations

from doctor.report.format import squeeze_blank_lines
from doctor.report.templating import markdown_environment
from doctor.report.view import ReportView


def render_markdown(view: ReportView) -> str:
    return squeeze_blank_lines(markdown_environment().get_template("report.md.j2").render(view=view))
