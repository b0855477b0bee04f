"""`doctor rules list|validate|explain`, and the guide's worked example loads and fires as documented."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from diagnose_builders import exam, quant

from doctor.cli import main
from doctor.diagnose import diagnose, load_rule_file, load_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "custom-rule.yaml"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_list_shows_every_builtin_rule():
    result = run("rules", "list")
    assert result.exit_code == 0
    for item in load_rules():
        assert item.rule.id in result.output


def test_validate_ok_and_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntitle: Bad\nfinding: {cause: x, severity: urgent, explanation: hi}\n", encoding="utf-8")
    assert run("rules", "validate", str(EXAMPLE)).exit_code == 0
    result = run("rules", "validate", str(EXAMPLE), str(bad))
    assert result.exit_code == 2
    assert f"{bad}:3: rule bad: finding.severity:" in result.output


def test_explain_known_and_unknown_ids(tmp_path):
    result = run("rules", "explain", "low-bit-cliff")
    assert result.exit_code == 0 and "max_step_ratio" in result.output and "Dettmers" in result.output
    result = run("rules", "explain", "low-bit-clif")
    assert result.exit_code == 2 and "did you mean low-bit-cliff" in result.output
    assert run("rules", "explain", "kl-tail", "--rules", str(EXAMPLE.parent)).exit_code == 0


def kl_checkup(p99: float):
    return quant("rtn-w4", 4, 1.05, metrics={"kl_mean": 0.03, "kl_median": 0.004, "kl_p99": p99})


def test_guide_example_fires_with_evidence_from_the_observations():
    rule = load_rule_file(EXAMPLE).rule
    assert rule.id == "kl-tail" and "kl-tail" in (ROOT / "docs" / "writing-rules.md").read_text(encoding="utf-8")
    e = exam([kl_checkup(0.5)])
    findings, files = diagnose(e, [EXAMPLE.parent])
    (f,) = [f for f in findings if f.rule == "kl-tail"]
    assert f.evidence == {"kl_mean": 0.03, "kl_p99": 0.5, "kl_median": 0.004}
    assert "0.5 nats against a median of 0.004" in f.explanation
    assert str(EXAMPLE) in files


def test_guide_example_quiet_on_a_light_tail():
    findings, _ = diagnose(exam([kl_checkup(0.05)]), [EXAMPLE.parent])
    assert all(f.rule != "kl-tail" for f in findings)
