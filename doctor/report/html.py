"""report.html: one self-contained, printable file (inline CSS and SVG, no scripts, no network requests)."""

from __future__ import annotations

from doctor.report.templating import html_environment
from doctor.report.view import ReportView


def render_html(view: ReportView) -> str:
    return html_environment().get_template("report.html.j2").render(view=view)
