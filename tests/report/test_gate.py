"""The decision at the top of the report: three gate states, the reason, and one summary row per checkup."""

from __future__ import annotations

from conftest import build_examination

from doctor.report.gate import checkup_verdict, gate, key_metric, summary_row
from doctor.results import CheckupResult, Examination, Finding, Measurement, ThresholdVerdict


def _only(exam: Examination, keep: list[str], findings: list[Finding], exit_code: int = 0) -> Examination:
    checkups = [c for c in exam.checkups if c.id in keep]
    return exam.model_copy(update={"checkups": checkups, "findings": findings, "exit_code": exit_code,
                                   "verdict": "healthy" if exit_code == 0 else "findings"})


def _missed(c: CheckupResult, severity: str) -> CheckupResult:
    t = ThresholdVerdict(key="ppl_ratio", max=1.01, value=c.value("ppl_ratio"), passed=False)
    return c.model_copy(update={"thresholds": [t], "verdict": "fail", "severity": severity})


def test_a_miss_below_fail_on_is_a_pass_with_warnings_naming_it() -> None:
    exam = build_examination()
    worse = _missed(exam.checkups[2], "low")
    g = gate(_only(exam.model_copy(update={"checkups": [exam.checkups[0], worse]}), [exam.checkups[0].id, worse.id],
                   []))
    assert g.state == "warn" and g.headline == "Release gate: pass with warnings"
    assert worse.id in g.reason and "≤ 1.01" in g.reason


def test_a_miss_at_fail_on_fails_the_gate_even_when_the_record_says_healthy() -> None:
    exam = build_examination()
    worse = _missed(exam.checkups[2], "high")
    g = gate(_only(exam.model_copy(update={"checkups": [worse]}), [worse.id], [], exit_code=0))
    assert g.state == "fail" and worse.id in g.reason


def test_only_info_findings_and_met_thresholds_pass() -> None:
    exam = build_examination()
    info = Finding(rule="INF1", title="8-bit is lossless", severity="info", cause="q", explanation="fine")
    passing = [c.id for c in exam.checkups if c.verdict == "pass"]
    g = gate(_only(exam, passing, [info]))
    assert g.state == "pass" and g.headline == "Release gate: pass"


def test_the_fail_reason_names_the_worst_finding_first() -> None:
    g = gate(build_examination())
    assert g.state == "fail"
    assert g.reason.index("could not be measured") < g.reason.index("critical '") < g.reason.index("high '")


def test_a_checkup_without_thresholds_is_measured_not_passed() -> None:
    c = build_examination().checkups[0].model_copy(update={"thresholds": []})
    assert checkup_verdict(c) == "measured"


def test_decoding_checkups_show_a_number() -> None:
    exam = build_examination()
    decode = CheckupResult(id="decode-greedy", modification={"kind": "decode", "strategy": "greedy"},
                           metrics={"acc:cloze": Measurement(value=0.5), "generated_ppl": Measurement(value=1.7)})
    row = summary_row(exam, decode, 1)
    assert key_metric(decode) == "generated_ppl" and row.value == "1.700" and row.verdict == "measured"


def test_summary_row_carries_interval_threshold_and_expected_band() -> None:
    exam = build_examination()
    c = exam.checkups[1]
    row = summary_row(exam, c, 2)
    assert row.metric == "ppl ratio" and row.interval.startswith("[") and row.threshold.startswith("≤")
    assert row.expected.count("[") == 1 and row.verdict == c.verdict


def test_summary_comes_before_findings_and_patient(rendered: dict[str, str]) -> None:
    html, md = rendered["report.html"], rendered["report.md"]
    assert html.index('id="summary"') < html.index('id="findings"') < html.index('id="patient"')
    assert md.index("| checkup | modification | metric |") < md.index("## Findings") < md.index("## Patient")
    assert "| reviewer | |" in md and "## Sign-off" in md


def test_signoff_names_command_source_and_hashes() -> None:
    from doctor.report import render_reports

    exam = build_examination()
    exam.environment = exam.environment.model_copy(update={
        "command": "doctor examine my-model --suite standard", "git_commit": "ab" * 20})
    exam.patient = exam.patient.model_copy(update={"revision": "cd" * 20})
    md = render_reports(exam)["report.md"]
    signoff = md[md.index("## Sign-off"):md.index("## Audit metadata")]
    for text in ("doctor examine my-model --suite standard", "ab" * 20, "cd" * 20, exam.suite_sha256,
                 exam.patient.weights_sha256, "| reviewer | |", "| decision (approve / reject) | |"):
        assert text in signoff, text


def test_examine_records_its_command_line(tmp_path, monkeypatch) -> None:
    from doctor.cli.examine import _command_line

    monkeypatch.setattr("sys.argv", ["/usr/bin/doctor", "examine", "--suite", "my suite.yaml"])
    assert _command_line() == "doctor examine --suite 'my suite.yaml'"


def test_partial_coverage_is_said_in_the_summary_row() -> None:
    exam = build_examination()
    c = exam.checkups[1]
    partial = c.model_copy(update={"metrics": {**c.metrics, "coverage": Measurement(value=0.75, n=1000)}})
    assert "touched 75.0% of the targeted weights" in summary_row(exam, partial, 2).note
    full = c.model_copy(update={"metrics": {**c.metrics, "coverage": Measurement(value=1.0, n=1000)}})
    assert "touched" not in summary_row(exam, full, 2).note
