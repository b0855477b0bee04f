"""write_reports / load_examination: escaping, determinism, self-containment, one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import build_examination

from doctor.errors import DoctorError
from doctor.report import load_examination, render_reports, write_reports
from doctor.report.format import md_escape
from doctor.report.html import render_html
from doctor.report.json import write_results
from doctor.report.view import build_view
from doctor.results import Examination, Measurement

NASTY = '<script>alert("x")</script>'


def _nasty_exam() -> Examination:
    exam = build_examination(model_id=f"evil/{NASTY}", rule_title=f"rule {NASTY}", suite_path=f"suites/{NASTY}.yaml")
    first = exam.checkups[0]
    exam.checkups[0] = first.model_copy(update={"description": NASTY, "error": NASTY})
    exam.rule_files[f"rules/{NASTY}.yaml"] = NASTY
    exam.findings[0] = exam.findings[0].model_copy(update={"evidence": {NASTY: NASTY}, "explanation": NASTY})
    # The worst checkup appears in plot legends and labels: its id must be escaped in the SVG too.
    worst = next(i for i, c in enumerate(exam.checkups) if c.id == "rtn-w2g32")
    exam.checkups[worst] = exam.checkups[worst].model_copy(update={"id": NASTY + " $x^2$"})
    return exam


def test_write_reports_writes_every_file(tmp_path: Path, exam: Examination) -> None:
    exam.checkups = exam.checkups[:4]  # a quantization sweep is enough to get plot files
    written = write_reports(exam, tmp_path)
    assert "plots/quant-ppl.svg" in written
    assert {"results.json", "report.md", "report.html"} <= set(written)
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"
    assert load_examination(written["results.json"]) == exam


@pytest.fixture(scope="module")
def nasty() -> dict[str, str]:
    return render_reports(_nasty_exam())


def test_script_strings_are_escaped_in_html(nasty: dict[str, str]) -> None:
    html = nasty["report.html"]
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert html.count("&lt;script&gt;") >= 6  # model, rule title, suite path, rule file, description, error


def test_script_strings_are_text_in_markdown_and_plots(nasty: dict[str, str]) -> None:
    md = nasty["report.md"]
    assert "<script" not in md.lower() and "</script" not in md.lower()
    assert "&lt;script>" in md
    svgs = [text for name, text in nasty.items() if name.endswith(".svg")]
    assert any("&lt;script&gt;" in svg for svg in svgs), "the renamed checkup should appear in a plot"
    assert not any("<script" in svg for svg in svgs)


def test_markdown_escape_keeps_tables_intact() -> None:
    escaped = md_escape("a|b\nc [x](http://e) *y* _z_ snake_case")
    assert "\n" not in escaped
    assert "\\|" in escaped and "[x\\](" in escaped
    assert "snake_case" in escaped and "\\*y\\*" in escaped and "\\_z\\_" in escaped
    assert md_escape("ppl <= 1.1 & x > 2") == "ppl <= 1.1 & x > 2"  # nothing here can become markup
    assert md_escape("&lt;b&gt; <!-- c -->") == "&amp;lt;b&amp;gt; &lt;!-- c -->"  # entities stay literal


def test_rerender_from_results_is_byte_identical(tmp_path: Path, rendered: dict[str, str]) -> None:
    """Markdown, HTML and plots rendered from results.json equal those rendered from the live record."""
    path = write_results(build_examination(), tmp_path / "results.json")
    again = render_reports(load_examination(path))
    assert set(again) == set(rendered)
    for name, text in rendered.items():
        assert again[name].encode() == text.encode(), name


def test_html_requests_nothing_external(rendered: dict[str, str]) -> None:
    html = rendered["report.html"]
    refs = re.findall(r"""(?:src|href|xlink:href)\s*=\s*["']([^"']*)["']""", html)
    assert refs, "expected in-page links"
    assert all(ref.startswith("#") for ref in refs), [r for r in refs if not r.startswith("#")]
    assert "@import" not in html
    assert all(url.startswith("#") for url in re.findall(r"url\(\s*['\"]?([^)'\"]*)", html))
    assert "<script" not in html and "<link" not in html


def test_html_shows_verdict_facts_and_every_checkup(exam: Examination, rendered: dict[str, str]) -> None:
    html = rendered["report.html"]
    assert "gate-fail" in html and "Release gate: FAIL" in html and "critical &#39;A checkup could not run&#39;" in html
    for c in exam.checkups:
        assert f">{c.id}<" in html
    assert exam.patient.weights_sha256 in html and exam.suite_sha256 in html
    for digest in exam.rule_files.values():
        assert digest in html
    assert "172 input features are not divisible" in html


def test_findings_sorted_by_severity(rendered: dict[str, str]) -> None:
    md = rendered["report.md"]
    order = [md.index(f"### {sev}:") for sev in ("critical", "high", "medium", "low", "info")]
    assert order == sorted(order)


def test_a_recorded_healthy_verdict_cannot_hide_an_errored_checkup() -> None:
    exam = build_examination().model_copy(update={"verdict": "healthy", "exit_code": 0})
    html = render_html(build_view(exam))
    assert "Release gate: FAIL" in html and "sparsegpt-2-4 could not be measured" in html


@pytest.mark.parametrize("content,expected", [
    (None, "no such results file"),
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "not a model-doctor results file"),
    ('{"patient": {"id": 3}}', "patient"),
])
def test_load_errors_are_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DoctorError) as info:
        load_examination(path)
    message = str(info.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_non_finite_values_survive_results_json(tmp_path: Path) -> None:
    exam = build_examination()
    exam.checkups = exam.checkups[:2]
    exam.checkups[1].metrics["kl_p99"] = Measurement(value=math.inf)
    exam.findings[0].evidence["z"] = -math.inf
    exam.checkups[0].metrics["kl_median"] = Measurement(value=math.nan)
    first = write_reports(exam, tmp_path / "a")
    text = first["results.json"].read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    loaded = load_examination(first["results.json"])
    assert loaded.checkups[1].metrics["kl_p99"].value == math.inf
    assert math.isnan(loaded.checkups[0].metrics["kl_median"].value)
    again = write_reports(loaded, tmp_path / "b")
    assert again["report.md"].read_bytes() == first["report.md"].read_bytes()


def test_audit_texts_timings_backend_size_and_latency_are_shown() -> None:
    exam = build_examination()
    onnx = exam.checkups[0].model_copy(update={
        "id": "ort-int8", "modification": {"kind": "onnx", "quantize": "dynamic-int8"}, "backend": "onnx",
        "provider": "CPUExecutionProvider", "started": "2025-01-01T10:59:58+00:00", "duration_s": 3.0,
        "metrics": {**exam.checkups[0].metrics, "size_mb": Measurement(value=0.3125),
                    "latency_ms": Measurement(value=12.5, n=5, note="median of 5")},
    })
    exam.checkups.append(onnx)
    files = render_reports(exam)
    for name in ("report.html", "report.md"):
        text = files[name]
        assert "onnx (CPUExecutionProvider)" in text, name
        assert "latency (ms)" in text and "12.5" in text and "size (MB)" in text, name
        assert "tinystories-calib: 16,384 tokens in 32 windows of 512, seed 0" in text, name
        # per checkup: start, end (start + duration, across the hour) and duration
        assert "2025-01-01T10:59:58+00:00" in text and "2025-01-01T11:00:01+00:00" in text, name
    plots = {n: t for n, t in files.items() if n.endswith(".svg")}
    assert "predicted band" in plots["plots/quant-ppl.svg"] and "threshold of each checkup" in plots["plots/quant-ppl.svg"]
    assert "predicted band" in plots["plots/prune-ppl.svg"] and "threshold 1.3 (every checkup)" in plots["plots/prune-ppl.svg"]
