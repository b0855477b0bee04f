"""The HTML report in headless Chromium: no console errors, no network requests, no script runs, fits the page.

Screenshots at desktop and print widths land in pytest's tmp_path, or in $REPORT_SCREENSHOTS when set (see
docs/report-check.md). Skipped, with the reason, when no Chromium is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cdp import Browser, find_browser
from test_report import _nasty_exam

from doctor.report import write_reports

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install -y chromium)")

DESKTOP_WIDTH = 1280
PRINT_WIDTH = 703  # A4 (794 CSS px at 96 dpi) less the 12 mm side margins of the print stylesheet


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reports(_nasty_exam(), tmp_path_factory.mktemp("report"))["report.html"]


def _shots_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("REPORT_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


def _png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big")


def test_report_renders_cleanly_at_desktop_and_print_widths(report_file: Path, tmp_path: Path) -> None:
    shots = _shots_dir(tmp_path)
    plots = len(list((report_file.parent / "plots").glob("*.svg")))
    with Browser(BROWSER, tmp_path / "profile") as browser:
        browser.open_page()
        for name, width, media in (("desktop", DESKTOP_WIDTH, "screen"), ("print", PRINT_WIDTH, "print")):
            browser.load(report_file.as_uri(), width, media=media)
            assert browser.evaluate("document.title").startswith("model-doctor examination")
            overflow = browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: page is {overflow}px wider than the viewport"
            if media == "print":  # paper cannot scroll: no table may be wider than its box
                hidden = browser.evaluate("Math.max(0, ...[...document.querySelectorAll('.scroll')]"
                                          ".map(e => e.scrollWidth - e.clientWidth))")
                assert hidden <= 0, f"print: a table is {hidden}px wider than the page"
            drawn = browser.evaluate("[...document.querySelectorAll('figure svg')]"
                                     ".filter(s => s.getBoundingClientRect().width > 100).length")
            assert drawn == plots, f"{name}: {drawn} of {plots} plots drawn"
            shot = browser.screenshot(shots / f"report-{name}.png")
            assert _png_width(shot) == width
        pdf = browser.print_pdf(shots / "report.pdf")
        assert pdf.read_bytes().startswith(b"%PDF")
        assert browser.problems() == []
        assert set(browser.requests()) == {report_file.as_uri()}
        assert not [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"], "a script ran"
        assert browser.evaluate("document.scripts.length") == 0
