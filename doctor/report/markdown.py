"""report.md: the same content as tables, fit for a pull request; plots are linked SVG files beside it."""

from __future__ import annotations

import re

from doctor.report.templating import markdown_environment
from doctor.report.view import ReportView

_BLANK_RUNS = re.compile(r"\n{3,}")


def render_markdown(view: ReportView) -> str:
    text = markdown_environment().get_template("report.md.j2").render(view=view)
    return _BLANK_RUNS.sub("\n\n", text).rstrip("\n") + "\n"
