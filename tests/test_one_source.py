"""Things that used to be copied now have one home: severity order, reading a user's file, compose leaves."""

from __future__ import annotations

import pytest

from doctor.data.texts import resolve_corpus
from doctor.diagnose.engine import sort_findings
from doctor.errors import ConfigError, DataError
from doctor.input.limits import MAX_SPEC_BYTES, read_text
from doctor.modifications.kinds.compose import leaves
from doctor.report.json import ResultsFileError, load_examination
from doctor.results import Finding
from doctor.spec.checkup import SEVERITIES, Suite, severity_rank
from doctor.spec.loading import load_model
from doctor.tasks.format import TaskFileError, load_task


def _finding(severity: str, rule: str = "r") -> Finding:
    return Finding(rule=rule, title="t", severity=severity, cause="c", explanation="e")


def test_an_unknown_severity_ranks_above_critical_everywhere():
    assert [severity_rank(s) for s in SEVERITIES] == list(range(len(SEVERITIES)))
    assert severity_rank("catastrophic") > severity_rank("critical")
    ordered = sort_findings([_finding("low", "a"), _finding("catastrophic", "b"), _finding("critical", "c")])
    assert [f.severity for f in ordered] == ["catastrophic", "critical", "low"]


def test_an_unknown_severity_fails_the_release_gate(tmp_path):
    from doctor.examination.verdict import verdict

    exam = type("Exam", (), {"fail_on": "critical", "checkups": [], "findings": [_finding("catastrophic")]})()
    assert verdict(exam)[0] == "findings"
    exam.findings = [_finding("high")]
    assert verdict(exam)[0] == "healthy"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such"), (b"\xff\xfe broken", "not UTF-8 text"), ("dir", "is a folder"),
])
def test_reading_a_file_fails_in_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "input.yaml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_text(path, MAX_SPEC_BYTES, "the file")
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text
    # every reader of a user's file goes through it and says the same in its own error type
    for call, error in ((lambda: load_model(path, Suite), ConfigError),
                        (lambda: load_examination(path), ResultsFileError),
                        (lambda: load_task(str(path)), TaskFileError),
                        (lambda: resolve_corpus(str(path), demo=True, purpose="eval"), DataError)):
        if content in (None, "dir") and error is not ConfigError:
            continue  # not a file: results take the folder's results.json, tasks and texts try bundled names first
        with pytest.raises(error, match=message):
            call()


def test_compose_leaves_are_flattened_once_for_specs_and_results():
    nested = {"kind": "compose", "steps": [{"kind": "prune", "sparsity": 0.5},
                                            {"kind": "compose", "steps": [{"kind": "quantize", "bits": 4}]}]}
    assert [leaf["kind"] for leaf in leaves(nested)] == ["prune", "quantize"]
    assert leaves({"kind": "quantize", "bits": 4}) == [{"kind": "quantize", "bits": 4}]
