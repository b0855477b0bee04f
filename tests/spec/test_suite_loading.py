"""Suite files: built-ins validate; malformed files give one-line errors naming file, line and key path."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from doctor.cli import main
from doctor.errors import ConfigError
from doctor.spec.suites import builtin_suites, load_suite

GOOD = """\
name: t
checkups:
  - id: a
    modification: {kind: quantize, method: rtn, bits: 4}
"""


def test_every_builtin_suite_validates():
    suites = builtin_suites()
    assert "quick" in suites and "standard" in suites
    for path in suites.values():
        suite, _, sha = load_suite(str(path))
        assert suite.checkups and len(sha) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("kind: quantize", "kind: quantise"), ":4: checkups.0.modification: unknown kind 'quantise'"),
        (GOOD.replace("bits: 4", "bits: 9"), ":4: checkups.0.modification.bits: Input should be less than or equal to 8"),
        (GOOD.replace("bits: 4", "bits: 1"), ":4: checkups.0.modification.bits: Input should be greater than or equal to 2"),
        (GOOD.replace("    modification", "    colour: red\n    modification"), ":4: checkups.0.colour: unknown key"),
        (GOOD + "eval: {seq_len: 4}\n", ":5: eval.seq_len: Input should be greater than or equal to 8"),
        (GOOD.replace("method: rtn, bits: 4", "method: rtn, bits: 4, group_size: [1]"),
         "checkups.0.modification.group_size"),
        ("name: t\ncheckups:\n  - id: a\n    modification: {kind: prune, structure: nm, n: 2, m: 4, sparsity: 0.3}\n",
         ":4: checkups.0.modification: an 2:4 pattern fixes sparsity at 0.5"),
        ("name: t\ncheckups: [\n", "invalid YAML"),
        ("name: t\nname: u\ncheckups: []\n", ":2: name: duplicate key 'name'"),
        (GOOD + "  - id: a\n    modification: {kind: decode}\n", "duplicate checkup id 'a'"),
        ("- just a list\n", ":1: <root>: expected a mapping"),
        (GOOD.replace("id: a", "id: a\n    expect: {ppl_ratoi: {max: 1}}"), "unknown metric key 'ppl_ratoi'"),
        (GOOD.replace("id: a", "id: a\n    tasks: [tinystories-clozed]"), ":4: checkups.0.tasks: tinystories-clozed: not a bundled task"),
    ],
)
def test_malformed_suite_is_one_located_line(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_suite(str(path))
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "Traceback" not in message


def test_cli_validate_exits_2_with_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("bits: 4", "bits: 12").replace("kind: quantize,", "kind: quantize, colour: 1,"))
    result = CliRunner().invoke(main, ["checkups", "validate", str(bad)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all(str(bad) in line for line in lines)


def test_examine_with_bad_suite_exits_2_before_loading_a_model(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("bits: 4", "bits: 0"))
    result = CliRunner().invoke(main, ["examine", "/nonexistent/model", "--suite", str(bad)])
    assert result.exit_code == 2
    assert "bits" in result.output and "Traceback" not in result.output


def test_unknown_suite_name_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'quick'"):
        load_suite("quik")


def test_schema_command_emits_json_schema():
    import json

    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "checkups" in schema["properties"]
    assert "QuantizeSpec" in json.dumps(schema)


def test_checkups_show_lists_every_option_with_its_default():
    from click.testing import CliRunner

    from doctor.cli import main

    result = CliRunner().invoke(main, ["checkups", "show", "standard"])
    assert result.exit_code == 0, result.output
    for option in ("true_sequential=False", "group_scales=reference", "act_order=False", "nm_tail=prune",
                   "ties=reference", "damp=0.01", "block_size=128"):
        assert option in result.output, option
