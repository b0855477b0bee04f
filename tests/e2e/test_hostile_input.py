"""Hostile and careless input through the command line: each case ends in exit 2 with one line that names the
file and the field or limit, within 5 seconds, before any model is loaded; the legitimate cases work.

Large inputs are generated in tmp_path. `examine` cases point at a model folder that does not exist where the
check must come first: an error about the model would show that the model was reached.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from doctor.cli import main
from doctor.input.limits import MAX_SPEC_BYTES, MAX_TASK_BYTES, MAX_TASK_LINE_CHARS, MAX_YAML_DEPTH, MAX_YAML_NODES

SECONDS = 5.0

RULE = """\
id: big-loss
title: Big loss
when: {value: {metric: ppl_ratio}, op: ">", to: 1.5}
finding:
  cause: big-loss
  severity: high
  explanation: "ratio {{ ppl_ratio | fmt }}"
"""

SUITE = """\
name: hostile
eval: {corpus: auto, max_windows: 2, bootstrap: 0}
checkups:
  - id: rtn-w8
    modification: {kind: quantize, method: rtn, bits: 8}
    metrics: [perplexity]
"""


def run(args: list[str], **kwargs):
    start = time.perf_counter()
    result = CliRunner().invoke(main, args, **kwargs)
    return result, time.perf_counter() - start


def refused(args: list[str], *fragments: str, **kwargs) -> str:
    """Exit 2, one line on stderr containing every fragment, nothing raw, within the time bound."""
    result, seconds = run(args, **kwargs)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert seconds < SECONDS, f"{seconds:.1f} s"
    assert "Traceback" not in result.output and "\x1b" not in result.stderr and "\x00" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def suite_with(tmp_path: Path, checkup_extra: str) -> Path:
    return write(tmp_path, "suite.yaml", SUITE + checkup_extra)


# ---- hangs and exhaustion -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["rules", "checkups", "examine"])
def test_alias_bomb_is_refused_in_milliseconds(tmp_path, command):
    bomb = write(tmp_path, "bomb.yaml", alias_bomb())
    if command == "examine":
        rules = tmp_path / "rules"
        rules.mkdir()
        bomb.rename(rules / "bomb.yaml")
        args = ["examine", str(tmp_path / "no-model"), "--rules", str(rules)]
        refused(args, "bomb.yaml", f"{MAX_YAML_NODES:,} YAML nodes", "aliases")
    else:
        refused([command, "validate", str(bomb)], str(bomb), f"{MAX_YAML_NODES:,} YAML nodes")


def test_template_with_nested_huge_loops_is_refused(tmp_path):
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    path = write(tmp_path, "loops.yaml", RULE.replace('"ratio {{ ppl_ratio | fmt }}"', repr(loops)))
    refused(["rules", "validate", str(path)], str(path), "finding.explanation", "limit of 100,000 operations")


def test_fifty_megabyte_rule_file_of_unknown_keys_is_refused_by_size(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("w") as fh:
        fh.write(RULE)
        line = "".join(f"k{i:07d}: 1\n" for i in range(100_000))
        while fh.tell() < 50 << 20:
            fh.write(line)
    refused(["rules", "validate", str(path)], str(path), f"limit of {MAX_SPEC_BYTES:,} bytes")


def test_many_unknown_keys_within_the_size_limit_are_a_node_limit(tmp_path):
    text = RULE + "".join(f"k{i}: 1\n" for i in range(MAX_YAML_NODES // 2 + 10))
    path = write(tmp_path, "keys.yaml", text)
    assert path.stat().st_size < MAX_SPEC_BYTES
    refused(["rules", "validate", str(path)], str(path), f"{MAX_YAML_NODES:,} YAML nodes")


def test_hundred_megabyte_task_file_is_refused_before_any_tokenizer(tmp_path):
    task = tmp_path / "big.jsonl"
    with task.open("w") as fh:
        fh.write('{"type": "open", "prompt": "')
        chunk = "x" * (1 << 20)
        for _ in range(100):
            fh.write(chunk)
        fh.write('"}\n')
    suite = suite_with(tmp_path, f"    tasks: [{task}]\n")
    refused(["checkups", "validate", str(suite)], str(task), f"limit of {MAX_TASK_BYTES:,} bytes")
    refused(["examine", str(tmp_path / "no-model"), "--suite", str(suite)], str(task), "bytes")


def test_overlong_task_line_is_refused_with_its_line_number(tmp_path):
    task = tmp_path / "long.jsonl"
    lines = [json.dumps({"type": "open", "prompt": "fine"}), json.dumps({"type": "open", "prompt": "x" * (2 * MAX_TASK_LINE_CHARS)})]
    task.write_text("\n".join(lines) + "\n")
    suite = suite_with(tmp_path, f"    tasks: [{task}]\n")
    refused(["checkups", "validate", str(suite)], f"{task}:2", f"limit of {MAX_TASK_LINE_CHARS:,}")


# ---- tracebacks instead of one line ---------------------------------------------------------------------------


def test_max_windows_below_one_is_one_line(tmp_path):
    refused(["examine", str(tmp_path / "no-model"), "--max-windows", "-5"], "--max-windows -5", "at least 1")
    refused(["examine", str(tmp_path / "no-model"), "--max-windows", "0"], "--max-windows 0", "at least 1")


def test_out_naming_a_file_or_unwritable_place_is_refused_before_loading(tmp_path):
    existing = write(tmp_path, "taken", "x")
    model = str(tmp_path / "no-model")  # never reached: the --out check comes first
    refused(["examine", model, "--out", str(existing)], f"--out {existing}", "not a folder")
    refused(["examine", model, "--out", str(existing / "sub")], "is a file, not a folder")
    refused(["examine", model, "--out", "/proc/doctor-out"], "--out /proc/doctor-out", "cannot write")


@pytest.mark.parametrize("text, fragment", [
    ("[" * 5000 + "]" * 5000, f"limit of {MAX_YAML_DEPTH} levels"),
    ("name: x\ncheckups: &c\n  - id: a\n    more: *c\n", "cyclic alias"),
])
def test_deep_or_cyclic_suite_is_one_line(tmp_path, text, fragment):
    path = write(tmp_path, "deep.yaml", text)
    refused(["checkups", "validate", str(path)], str(path), fragment)


# ---- silently wrong -------------------------------------------------------------------------------------------


def test_user_task_cannot_take_a_bundled_task_name(tmp_path):
    task = tmp_path / "mine.jsonl"
    header = {"format": "model-doctor-task", "name": "tinystories-cloze", "type": "multiple_choice"}
    item = {"context": "a", "choices": ["b", "c"], "gold": 0}
    task.write_text(json.dumps(header) + "\n" + json.dumps(item) + "\n")
    suite = suite_with(tmp_path, f"    tasks: [{task}]\n")
    refused(["checkups", "validate", str(suite)], f"{task}:1", "name", "'tinystories-cloze' is the name of a bundled task")


def test_two_user_tasks_with_one_name_are_refused(tmp_path):
    item = json.dumps({"type": "open", "prompt": "a"})
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.jsonl").write_text(item + "\n")
    extra = f"    tasks: [{tmp_path / 'a' / 'same.jsonl'}, {tmp_path / 'b' / 'same.jsonl'}]\n"
    suite = suite_with(tmp_path, extra)
    refused(["checkups", "validate", str(suite)], str(suite), "checkups.0.tasks.1", "named 'same'")


# ---- validated too late or not at all -------------------------------------------------------------------------


def test_bad_task_content_is_reported_before_the_model_is_loaded(tmp_path):
    task = tmp_path / "bad.jsonl"
    task.write_text(json.dumps({"type": "multiple_choice", "context": "a", "choices": ["b", "c"], "gold": True}) + "\n")
    suite = suite_with(tmp_path, f"    tasks: [{task}]\n")
    refused(["examine", str(tmp_path / "no-model"), "--suite", str(suite)], f"{task}:1", "gold")
    refused(["checkups", "validate", str(suite)], f"{task}:1", "gold", "integer")


@pytest.mark.parametrize("where", ["eval", "calibration", "modification"])
def test_missing_corpus_is_refused_up_front(tmp_path, where):
    missing = tmp_path / "no-such-text.txt"
    if where == "eval":
        suite = write(tmp_path, "s.yaml", SUITE.replace("corpus: auto", f"corpus: {missing}"))
        key = "eval.corpus"
    elif where == "calibration":
        suite = write(tmp_path, "s.yaml", SUITE + f"calibration: {{corpus: {missing}}}\n")
        key = "calibration.corpus"
    else:
        text = SUITE.replace("bits: 8}", "bits: 8, calibration: {corpus: wikitext2-tset}}")
        suite = write(tmp_path, "s.yaml", text)
        key = "checkups.0.modification.calibration.corpus"
    line = refused(["checkups", "validate", str(suite)], str(suite), key, "not a bundled corpus")
    refused(["examine", str(tmp_path / "no-model"), "--suite", str(suite)], key)
    assert line.startswith(f"error: {suite}:")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_threshold_is_refused(tmp_path, value):
    suite = write(tmp_path, "s.yaml", SUITE + f"    expect: {{ppl_ratio: {{max: {value}}}}}\n")
    refused(["checkups", "validate", str(suite)], str(suite), "expect.ppl_ratio.max", "finite")


@pytest.mark.parametrize("change, fragments", [
    (("{metric: ppl_ratio}", "{metric: happiness}"), ["when.value", "unknown metric 'happiness'"]),
    (("{metric: ppl_ratio}", "{metric: ppl_ration}"), ["did you mean 'ppl_ratio'"]),
    (("to: 1.5", "to: .nan"), ["when", "finite"]),
    (("title: Big loss\n", "title: Big loss\nselect: {params: {bits: {max: .nan}}}\n"), ["select", "finite"]),
    (("ratio {{ ppl_ratio | fmt }}", "{% if ppl_ratio %}{{ kl_mean }}{% endif %}"), ["finding.explanation", "'kl_mean'"]),
    (('{value: {metric: ppl_ratio}, op: ">", to: 1.5}', '{value: {field: id}, op: matches, to: "(a)\\\\1"}'),
     ["when", "RE2", "invalid escape sequence"]),
])
def test_rule_mistakes_are_one_line(tmp_path, change, fragments):
    path = write(tmp_path, "rule.yaml", RULE.replace(*change))
    refused(["rules", "validate", str(path)], str(path), *fragments)


def test_control_characters_are_refused_and_never_printed_raw(tmp_path):
    suite = write(tmp_path, "s.yaml", SUITE.replace("name: hostile", 'name: "evil\\x1b[31m\\x00"'))
    refused(["checkups", "validate", str(suite)], f"{suite}:1", "control character")
    refused(["examine", "--suite", "unknown\x1b[2J"], "unknown\\x1b[2J")


# ---- usability ------------------------------------------------------------------------------------------------


def test_existing_journal_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text('{"header": {}}\n')
    refused(["examine", str(tmp_path / "no-model"), "--out", str(out)], "--resume", "--overwrite")


def test_mistyped_folder_is_not_a_hub_lookup(tmp_path):
    refused(["examine", "modle-folder"], "modle-folder: no such folder")
    refused(["examine", str(tmp_path / "typo")], "no such folder")


def test_hub_id_with_hf_hub_offline_fails_fast(tmp_path):
    refused(["examine", "nobody-here/no-such-model-xyz"], "nobody-here/no-such-model-xyz", "HF_HUB_OFFLINE",
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})


@pytest.mark.parametrize("template", ["{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "{{ " + "-" * 9000 + "1 }}"])
def test_deeply_nested_template_is_one_line(tmp_path, template):
    path = write(tmp_path, "deep.yaml", RULE.replace('"ratio {{ ppl_ratio | fmt }}"', repr(template)))
    refused(["rules", "validate", str(path)], str(path), "finding.explanation", "nested too deep")


def test_deeply_nested_json_in_a_task_line_is_one_line(tmp_path):
    task = tmp_path / "deep.jsonl"
    task.write_text('{"type": "open", "prompt": "a", "meta": {"x": ' + "[" * 40_000 + "]" * 40_000 + "}}\n")
    suite = suite_with(tmp_path, f"    tasks: [{task}]\n")
    refused(["checkups", "validate", str(suite)], f"{task}:1", "nested too deep")


def test_oversized_corpus_is_refused_up_front(tmp_path):
    from doctor.input.limits import MAX_CORPUS_BYTES

    corpus = tmp_path / "huge.txt"
    with corpus.open("wb") as fh:
        fh.truncate(MAX_CORPUS_BYTES + 1)  # sparse: no time spent writing
    suite = write(tmp_path, "s.yaml", SUITE.replace("corpus: auto", f"corpus: {corpus}"))
    refused(["checkups", "validate", str(suite)], str(suite), "eval.corpus", f"limit of {MAX_CORPUS_BYTES:,} bytes")
