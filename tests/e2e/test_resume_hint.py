"""An interrupted examination prints the exact command that resumes it, and that command works as printed;
an output folder holding an examination is never silently overwritten."""

from __future__ import annotations

import shlex

from click.testing import CliRunner

import doctor.examination.runner
from doctor.cli import main

SUITE = """\
name: resumable
eval: {corpus: auto, max_windows: 8, bootstrap: 0}
checkups:
  - id: rtn-w8
    modification: {kind: quantize, method: rtn, bits: 8}
    metrics: [perplexity]
  - id: rtn-w4
    modification: {kind: quantize, method: rtn, bits: 4, group_size: 32}
    metrics: [perplexity]
"""


def test_interrupt_hint_resumes_with_every_option_and_keeps_finished_work(tmp_path, monkeypatch):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    real = doctor.examination.runner.run_checkup

    def interrupt_second(session, checkup):
        if checkup.id == "rtn-w4":
            raise KeyboardInterrupt
        return real(session, checkup)

    monkeypatch.setattr(doctor.examination.runner, "run_checkup", interrupt_second)
    args = ["examine", "--suite", str(suite), "--max-windows", "2", "--fail-on", "critical", "--no-predictor",
            "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 130, first.output
    hint = first.stderr.split("continue with: ", 1)[1].strip()
    words = shlex.split(hint)
    assert words[:2] == ["doctor", "examine"] and words[-1] == "--resume"
    for option in (["--max-windows", "2"], ["--fail-on", "critical"], ["--no-predictor"], ["--out", str(out)]):
        assert " ".join(option) in " ".join(words), (option, hint)
    journal = (out / "results.jsonl").read_text().splitlines()
    assert len(journal) == 2  # header and the finished checkup

    monkeypatch.setattr(doctor.examination.runner, "run_checkup", real)
    resumed = CliRunner().invoke(main, words[1:])
    assert resumed.exit_code in (0, 1), resumed.output
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[:2] == journal and len(lines) == 3  # the finished checkup kept byte for byte

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert (out / "results.jsonl").read_text().splitlines() == lines

    overwritten = CliRunner().invoke(main, [*args, "--overwrite"])
    assert overwritten.exit_code in (0, 1), overwritten.output
    assert (out / "results.jsonl.1").read_text().splitlines() == lines
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
