"""Reports: results.json, report.md, report.html and plots/*.svg, all rendered from an Examination alone."""

from __future__ import annotations

import logging
from pathlib import Path

from doctor.report.candidates import candidate_rows
from doctor.report.html import render_html
from doctor.report.json import ResultsFileError, load_examination, roundtrip, write_results, write_text_atomic
from doctor.report.markdown import render_markdown
from doctor.report.plots import make_plots
from doctor.report.view import build_view
from doctor.results import Examination

__all__ = ["ResultsFileError", "load_examination", "render_reports", "write_reports"]

log = logging.getLogger(__name__)


def render_reports(exam: Examination) -> dict[str, str]:
    """Relative path -> file content for every report file (Markdown, HTML and the plots it links)."""
    plots = make_plots(exam)
    view = build_view(exam, plots, candidate_rows(exam))
    files = {"report.md": render_markdown(view), "report.html": render_html(view)}
    files.update({p.file: p.svg + "\n" for p in plots})
    return files


def write_reports(exam: Examination, out_dir: Path, *, results: bool = True) -> dict[str, Path]:
    """Write results.json, report.md, report.html and plots/*.svg into `out_dir`, each atomically.

    `results=False` leaves results.json alone (re-rendering a report beside the file it came from).
    """
    out_dir = Path(out_dir)
    written = {"results.json": write_results(exam, out_dir / "results.json")} if results else {}
    # Render what results.json holds, so `doctor report results.json` reproduces these files byte for byte.
    for name, text in render_reports(roundtrip(exam)).items():
        written[name] = write_text_atomic(out_dir / name, text)
    log.info("report written to %s", out_dir / "report.html")
    return written

