"""`doctor diff` and `doctor report`: what counts as a change, exit codes, re-rendering from results alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import build_examination
from hypothesis import given
from hypothesis import strategies as st

from doctor.cli import main
from doctor.report import write_reports
from doctor.report.diff import diff_examinations, intervals_overlap
from doctor.report.diff_report import terminal_summary
from doctor.report.json import write_results
from doctor.results import Examination, Finding, Measurement, ThresholdVerdict


def _with_metric(exam: Examination, cid: str, key: str, m: Measurement, **update) -> Examination:
    checkups = []
    for c in exam.checkups:
        if c.id == cid:
            c = c.model_copy(update={"metrics": {**c.metrics, key: m}, **update})
        checkups.append(c)
    return exam.model_copy(update={"checkups": checkups})


def test_identical_examinations_do_not_differ(exam: Examination) -> None:
    d = diff_examinations(exam, exam)
    assert d.exit_code == 0 and d.metrics and not d.worse and not d.gate_changed
    assert {m.status for m in d.metrics} <= {"within noise", "no interval"}


def test_move_within_the_interval_is_not_a_change(exam: Examination) -> None:
    m = exam.checkups[1].metrics["ppl_ratio"]
    nudged = m.model_copy(update={"value": m.value * 1.001, "lower": m.lower * 1.001, "upper": m.upper * 1.001})
    assert diff_examinations(exam, _with_metric(exam, exam.checkups[1].id, "ppl_ratio", nudged)).exit_code == 0


def test_move_beyond_the_interval_and_verdict_flip_are_worse(exam: Examination) -> None:
    cid = "rtn-w4g32"
    worse = Measurement(value=1.5, lower=1.45, upper=1.55, n=80)
    b = _with_metric(exam, cid, "ppl_ratio", worse, verdict="fail",
                     thresholds=[ThresholdVerdict(key="ppl_ratio", max=1.1, value=1.5, passed=False)])
    d = diff_examinations(exam, b)
    assert [(m.checkup, m.metric, m.status) for m in d.worse] == [(cid, "ppl_ratio", "worse")]
    assert d.verdicts == [(cid, "pass", "fail")] and d.exit_code == 1
    assert diff_examinations(b, exam).exit_code == 0  # the way back is better, not worse
    assert [m.status for m in diff_examinations(b, exam).metrics if m.checkup == cid and m.metric == "ppl_ratio"] \
        == ["better"]


def test_metric_without_interval_is_shown_never_judged(exam: Examination) -> None:
    cid = exam.checkups[0].id
    base = exam.checkups[0].metrics["kl_p99"].value
    d = diff_examinations(exam, _with_metric(exam, cid, "kl_p99", Measurement(value=base * 1.5)))
    assert d.exit_code == 0
    assert [m.status for m in d.metrics if m.checkup == cid and m.metric == "kl_p99"] == ["no interval"]


def test_different_texts_are_not_judged(exam: Examination) -> None:
    cid = "rtn-w4g32"
    other = exam.baseline.text.model_copy(update={"tokens": 8192, "windows": 16, "sha256": "ff" * 32})
    b = _with_metric(exam, cid, "ppl_ratio", Measurement(value=1.5, lower=1.45, upper=1.55), text=other)
    b = b.model_copy(update={"baseline": b.baseline.model_copy(update={"text": other})})
    d = diff_examinations(exam, b)
    assert d.texts_differ and not d.worse and d.exit_code == 0
    assert [m.status for m in d.metrics if m.checkup == cid and m.metric == "ppl_ratio"] == ["texts differ"]


def test_findings_are_new_resolved_or_no_longer_measured(exam: Examination) -> None:
    gone = exam.checkups[0].id
    on_gone = Finding(rule="OLD1", title="about a dropped checkup", severity="low", cause="x", explanation="y",
                      checkups=[gone])
    a = exam.model_copy(update={"findings": [*exam.findings, on_gone]})
    extra = Finding(rule="NEW1", title="new problem", severity="high", cause="x", explanation="y",
                    checkups=[exam.checkups[3].id])
    b = exam.model_copy(update={"findings": exam.findings[1:] + [extra], "checkups": exam.checkups[1:]})
    d = diff_examinations(a, b)
    assert [f.rule for f in d.new_findings] == ["NEW1"]
    assert [f.rule for f in d.resolved_findings] == [exam.findings[0].rule]
    assert [f.rule for f in d.unmeasured_findings] == ["OLD1"]
    assert d.only_a == [gone]


def test_gate_turning_to_fail_exits_1(exam: Examination) -> None:
    passing = [c for c in exam.checkups if c.verdict == "pass"]
    good = exam.model_copy(update={"checkups": passing, "findings": [], "exit_code": 0, "verdict": "healthy"})
    d = diff_examinations(good, exam)
    assert d.a_gate.state == "pass" and d.b_gate.state == "fail" and d.gate_to_fail and d.exit_code == 1
    assert "changed to fail" in terminal_summary(d)


@given(st.floats(0, 10), st.floats(0, 5), st.floats(0, 10), st.floats(0, 5))
def test_interval_overlap_is_symmetric_and_reflexive(a: float, wa: float, b: float, wb: float) -> None:
    ma = Measurement(value=a, lower=a - wa, upper=a + wa)
    mb = Measurement(value=b, lower=b - wb, upper=b + wb)
    assert intervals_overlap(ma, mb) == intervals_overlap(mb, ma)
    assert intervals_overlap(ma, ma) is True
    assert intervals_overlap(ma, mb) == (abs(a - b) <= wa + wb)


def test_cli_diff_writes_both_files_and_exits_on_regression(tmp_path: Path, exam: Examination) -> None:
    a = write_results(exam, tmp_path / "a" / "results.json")
    b = write_results(_with_metric(exam, "rtn-w4g32", "ppl_ratio", Measurement(value=2.0, lower=1.9, upper=2.1)),
                      tmp_path / "b" / "results.json")
    runner = CliRunner()
    same = runner.invoke(main, ["diff", str(a), str(a)])
    assert same.exit_code == 0, same.output
    changed = runner.invoke(main, ["diff", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert changed.exit_code == 1 and "rtn-w4g32 ppl ratio" in changed.output
    assert "|" not in changed.output and "#" not in changed.output  # plain lines, the tables are in the files
    html = (tmp_path / "cmp" / "diff.html").read_text()
    md = (tmp_path / "cmp" / "diff.md").read_text()
    assert "Release gate:" in html and "default-src 'none'" in html and "<script" not in html
    assert md.index("Release gate:") < md.index("## Shared checkups") < md.index("## Findings")
    assert "| rtn-w4g32 | ppl ratio |" in md and "| worse |" in md
    assert (tmp_path / "cmp" / "plots" / "diff-shared.svg").is_file()
    bad = runner.invoke(main, ["diff", str(a), str(tmp_path / "missing.json")])
    assert bad.exit_code == 2 and "no such results file" in bad.output


@pytest.mark.parametrize("target", ["same", "other"])
def test_cli_report_rerenders_identically(tmp_path: Path, target: str) -> None:
    exam = build_examination(extra_findings=False)
    exam.checkups = exam.checkups[:3]  # fewer plots: this test is about files, not pictures
    first = write_reports(exam, tmp_path / "run")
    md_before = first["report.md"].read_bytes()
    json_before = first["results.json"].read_bytes()
    first["report.md"].unlink()
    out = tmp_path / "run" if target == "same" else tmp_path / "again"
    args = ["report", str(first["results.json"])] + ([] if target == "same" else ["--out", str(out)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_bytes() == md_before
    assert (out / "results.json").read_bytes() == json_before
    assert (out / "report.html").is_file() and (out / "plots").is_dir()


def test_cli_report_bad_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[1, 2")
    result = CliRunner().invoke(main, ["report", str(path)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "not valid JSON" in result.output


def test_all_lists_every_shared_metric(exam: Examination) -> None:
    from doctor.report.diff_report import render_diff_reports

    d = diff_examinations(exam, exam)
    short, every = render_diff_reports(d, exam, exam)["diff.md"], render_diff_reports(d, exam, exam, every=True)["diff.md"]
    assert "| kl p99 |" not in short.lower().replace("kl_p99", "kl p99") and "KL p99" not in short
    assert "KL p99" in every and every.count("within noise") + every.count("no interval") > short.count("within noise")
