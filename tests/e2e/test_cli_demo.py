"""`doctor examine` end to end on the bundled real model, through the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from doctor.cli import main

SUITE = """\
name: e2e
eval: {corpus: auto, max_windows: 6, bootstrap: 200}
checkups:
  - id: rtn-w8
    modification: {kind: quantize, method: rtn, bits: 8}
    expect: {ppl_ratio: {max: 1.01}}
    severity: high
  - id: rtn-w2-g32
    modification: {kind: quantize, method: rtn, bits: 2, group_size: 32}
    expect: {ppl_ratio: {max: 1.5}}
    severity: medium
  - id: magnitude-2of4
    modification: {kind: prune, method: magnitude, structure: nm, n: 2, m: 4}
"""


@pytest.fixture(scope="module")
def examined(tmp_path_factory):
    out = tmp_path_factory.mktemp("exam")
    suite = out / "suite.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(main, ["examine", "--suite", str(suite), "--out", str(out / "r"), "--fail-on", "high"])
    return result, out / "r"


def test_demo_examination_writes_reports_and_gates(examined):
    result, out = examined
    assert result.exit_code == 0, result.output  # 2-bit misses a medium threshold, below --fail-on high
    for name in ("results.json", "results.jsonl", "report.md", "report.html"):
        assert (out / name).is_file()
    exam = json.loads((out / "results.json").read_text())
    assert exam["patient"]["id"] == "stories260k" and exam["patient"]["params"] == 260032
    # literature protocol on TinyStories: a little under 4 (the per-story loss 1.2547 gives 3.5)
    assert 3.0 < exam["baseline"]["metrics"]["ppl"]["value"] < 4.6
    assert exam["baseline"]["text"]["seq_len"] == 512
    by_id = {c["id"]: c for c in exam["checkups"]}
    assert by_id["rtn-w8"]["metrics"]["ppl_ratio"]["value"] < 1.01
    assert by_id["rtn-w8"]["metrics"]["kl_mean"]["value"] < 0.01
    assert by_id["rtn-w2-g32"]["metrics"]["ppl_ratio"]["value"] > 2.0
    assert by_id["rtn-w2-g32"]["verdict"] == "fail"
    assert by_id["magnitude-2of4"]["realized"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert "Release gate: pass with warnings (exit 0)" in result.output  # thresholds missed below --fail-on
    assert "healthy" not in result.output.lower()


def test_fail_on_medium_turns_the_threshold_miss_into_exit_1(examined, tmp_path):
    _, out = examined
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(
        main, ["examine", "--suite", str(suite), "--out", str(out), "--resume", "--fail-on", "medium"]
    )
    assert result.exit_code == 1, result.output
    assert "reused" not in result.output  # progress goes to stderr, results to stdout


def test_missing_model_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["examine", str(tmp_path / "nope"), "--suite", "quick"])
    assert result.exit_code == 2
    assert "no such folder" in result.output and "Traceback" not in result.output


def test_pickle_checkpoint_refused_without_flag(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    result = CliRunner().invoke(main, ["examine", str(tmp_path), "--suite", "quick"])
    assert result.exit_code == 2
    assert "--allow-pickle" in result.output


def test_unreadable_model_folder_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["examine", str(tmp_path), "--suite", "quick"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "config.json:1: not valid JSON" in result.output


def test_malformed_user_rule_is_exit_2_before_loading(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("id: my-rule\ntitle: t\nwhen: {all: [{metric: ppl_ratio, op: '>>', value: 1}]}\n")
    result = CliRunner().invoke(main, ["examine", str(tmp_path / "no-model"), "--rules", str(rules)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "no such model" not in result.output


OVERRIDE = """\
id: safe-compression-zone
title: Safe zone (site policy)
select: {kind: [quantize, prune], status: ok, verdict: pass}
when: {value: {metric: ppl_ratio}, op: "<=", to: 1.01}
finding:
  cause: safe-compression-zone
  severity: low
  explanation: "{{ checkup }} keeps perplexity within 1% ({{ ppl_ratio | fmt }})."
"""
BLEED = """\
id: big-bleed
title: Large perplexity and KL rise
select: {kind: quantize, status: ok}
when:
  all:
    - {value: {metric: ppl_ratio}, op: ">", to: 2}
    - {value: {metric: kl_mean}, op: ">", to: 0.1}
finding:
  cause: big-bleed
  severity: high
  explanation: "{{ checkup }}: ppl ratio {{ ppl_ratio | fmt }}, KL {{ kl_mean | fmt }}."
"""
ORDER = ["critical", "high", "medium", "low", "info"]


def test_rules_dirs_override_by_id_and_findings_carry_the_observed_values(examined, tmp_path):
    _, first = examined
    out = tmp_path / "r"
    out.mkdir()
    (out / "results.jsonl").write_bytes((first / "results.jsonl").read_bytes())
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    (one / "safe.yaml").write_text(OVERRIDE)
    (two / "bleed.yaml").write_text(BLEED)
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(
        main, ["examine", "--suite", str(suite), "--out", str(out), "--resume", "--fail-on", "critical",
               "--rules", str(one), "--rules", str(two)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    exam = json.loads((out / "results.json").read_text())
    metrics = {c["id"]: c["metrics"] for c in exam["checkups"]}
    findings = exam["findings"]
    by_rule = {}
    for f in findings:
        by_rule.setdefault(f["rule"], []).append(f)
    (bleed,) = by_rule["big-bleed"]
    assert bleed["checkups"] == ["rtn-w2-g32"]
    for key in ("ppl_ratio", "kl_mean"):  # evidence is the very number results.json holds
        assert bleed["evidence"][key] == metrics["rtn-w2-g32"][key]["value"]
    (safe,) = by_rule["safe-compression-zone"]  # the user rule replaced the built-in one of the same id
    assert safe["title"] == "Safe zone (site policy)" and safe["checkups"] == ["rtn-w8"]
    assert safe["evidence"]["ppl_ratio"] == metrics["rtn-w8"]["ppl_ratio"]["value"]
    ranks = [ORDER.index(f["severity"]) for f in findings]
    assert ranks == sorted(ranks)
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for f in findings:  # threshold misses are rows of one table; rule findings keep their title
        shown = f"| {f['severity']} | {f['checkups'][0]} |" if f["rule"] == "expect" else f["title"]
        assert shown in md and (f["title"] in html or f["rule"] == "expect")
    positions = [md.index(title) for title in ("Large perplexity and KL rise", "Safe zone (site policy)")]
    assert positions == sorted(positions)  # high before low in the report too
