"""The HTML report and the diff report in headless Chromium, read as a release reviewer would.

Both pages load at a desktop width (1400 px), a phone width (420 px) and as print: no console errors, no network
requests, no script runs, nothing wider than the viewport, every plot drawn, and the decision (gate and summary
table) on the first screen at 1400 px and on the first printed page. The checked-in sample reports
(reports/*/report.html) get the same check when present. Screenshots land in pytest's tmp_path, or in
$REPORT_SCREENSHOTS when set (see docs/report-check.md). Skipped, with the reason, when no Chromium is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cdp import Browser, find_browser
from conftest import build_examination
from test_report import _nasty_exam

from doctor.report import write_reports
from doctor.report.diff import diff_examinations
from doctor.report.diff_report import write_diff

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (apt-get install -y chromium)")

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "reports").glob("*/report.html"))
DESKTOP = (1400, 900)  # the first screen a reviewer sees
PHONE = (420, 860)
PRINT_WIDTH = 703  # A4 (794 CSS px at 96 dpi) less the 12 mm side margins of the print stylesheet
PRINT_PAGE_HEIGHT = 1014  # A4 (1123 CSS px) less the 14 mm top and bottom margins
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"
SUMMARY_BOTTOM = "document.querySelector('#summary').getBoundingClientRect().bottom + window.scrollY"
GATE_TOP = "document.querySelector('#decision').getBoundingClientRect().top + window.scrollY"
HIDDEN_IN_BOXES = ("Math.max(0, ...[...document.querySelectorAll('.scroll')]"
                   ".map(e => e.scrollWidth - e.clientWidth))")
DRAWN = "[...document.querySelectorAll('figure svg')].filter(s => s.getBoundingClientRect().width > 100).length"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pages")
    a = build_examination(extra_findings=False)
    a = a.model_copy(update={"checkups": a.checkups[:6]})
    b = build_examination()
    return {
        "nasty": write_reports(_nasty_exam(), folder / "nasty")["report.html"],
        "diff": write_diff(diff_examinations(a, b), a, b, folder / "diff")["diff.html"],
        **{f"sample-{p.parent.name}": p for p in SAMPLES},
    }


def _shots_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("REPORT_SCREENSHOTS", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


def _png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big")


def _check_page(browser: Browser, page: Path, name: str, shots: Path) -> None:
    plots = len(list((page.parent / "plots").glob("*.svg"))) if page.name == "report.html" else None
    for view, (width, height), media in (("desktop", DESKTOP, "screen"), ("phone", PHONE, "screen"),
                                         ("print", (PRINT_WIDTH, PRINT_PAGE_HEIGHT), "print")):
        browser.load(page.as_uri(), width, height=height, media=media)
        assert browser.evaluate("document.title").startswith("model-doctor")
        overflow = browser.evaluate(OVERFLOW)
        assert overflow <= 0, f"{name} {view}: page is {overflow}px wider than the viewport"
        if media == "print":  # paper cannot scroll: no table may be wider than its box
            hidden = browser.evaluate(HIDDEN_IN_BOXES)
            assert hidden <= 0, f"{name} print: a table is {hidden}px wider than the page"
        assert browser.evaluate(GATE_TOP) < 200, f"{name} {view}: the gate is not at the top"
        if page.name == "report.html" and view != "phone":
            bottom = browser.evaluate(SUMMARY_BOTTOM)
            assert bottom <= height, f"{name} {view}: summary table ends at {bottom:.0f}px, below the first {height}px"
        if plots is not None:
            drawn = browser.evaluate(DRAWN)
            assert drawn == plots, f"{name} {view}: {drawn} of {plots} plots drawn"
        shot = browser.screenshot(shots / f"{name}-{view}.png")
        assert _png_width(shot) == width
    pdf = browser.print_pdf(shots / f"{name}.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")


def test_pages_render_cleanly_at_desktop_phone_and_print(pages: dict[str, Path], tmp_path: Path) -> None:
    shots = _shots_dir(tmp_path)
    with Browser(BROWSER, tmp_path / "profile") as browser:
        browser.open_page()
        for name, page in pages.items():
            _check_page(browser, page, name, shots)
        assert browser.problems() == []
        assert set(browser.requests()) == {p.as_uri() for p in pages.values()}
        assert not [e for e in browser.events if e["method"] == "Page.javascriptDialogOpening"], "a script ran"
        assert browser.evaluate("document.scripts.length") == 0


def test_details_open_for_print(pages: dict[str, Path], tmp_path: Path) -> None:
    """Collapsed on screen, every <details> body is laid out when printed."""
    closed_height = ("[...document.querySelectorAll('details.checkup')].map(d => d.getBoundingClientRect().height)"
                     ".reduce((a, b) => a + b, 0)")
    with Browser(BROWSER, tmp_path / "profile") as browser:
        browser.open_page()
        browser.load(pages["nasty"].as_uri(), PRINT_WIDTH, media="screen")
        on_screen = browser.evaluate(closed_height)
        browser.load(pages["nasty"].as_uri(), PRINT_WIDTH, media="print")
        printed = browser.evaluate(closed_height)
    assert printed > 3 * on_screen > 0
