"""Input limits: YAML size/nesting/aliases from the event stream, safe regexes, file sizes; legitimate input passes."""

from __future__ import annotations

import time

import pytest

from doctor.errors import ConfigError
from doctor.input.limits import MAX_SPEC_BYTES, MAX_YAML_NODES, check_yaml_size, printable, read_text
from doctor.input.safe_regex import RegexError, compile_safe
from doctor.spec.loading import parse_yaml
from doctor.spec.suites import builtin_suites
from tests.e2e.test_hostile_input import alias_bomb


def test_legitimate_anchors_and_every_builtin_suite_pass():
    text = "base: &b {kind: quantize, bits: 4}\nuse: [*b, *b]\n"
    assert parse_yaml(text, "x.yaml").data == {"base": {"kind": "quantize", "bits": 4}, "use": [
        {"kind": "quantize", "bits": 4}, {"kind": "quantize", "bits": 4}]}
    for path in builtin_suites().values():
        check_yaml_size(path.read_text(), str(path))


def test_alias_bomb_is_counted_not_expanded():
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_NODES:,} YAML nodes"):
        parse_yaml(alias_bomb(9), "bomb.yaml")  # 10^9 nodes once expanded
    assert time.perf_counter() - start < 0.5


def test_a_document_just_under_the_node_limit_passes_and_one_over_fails():
    per_item = 2  # a sequence entry `[1]` is a sequence node and a scalar
    fine = "[" + ", ".join(["[1]"] * ((MAX_YAML_NODES - 1) // per_item)) + "]"
    check_yaml_size(fine, "fine.yaml")
    with pytest.raises(ConfigError, match="YAML nodes"):
        check_yaml_size(fine[:-1] + ", [1]]", "over.yaml")


def test_undefined_and_cyclic_aliases_are_named():
    with pytest.raises(ConfigError, match=r"x.yaml:2: alias \*a refers to a node that contains it"):
        check_yaml_size("a: &a\n  b: *a\n", "x.yaml")


def test_oversized_and_non_utf8_files_name_the_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * (MAX_SPEC_BYTES // 5 + 1))
    with pytest.raises(ConfigError, match=f"{big}: the file is .* over the limit of {MAX_SPEC_BYTES:,} bytes"):
        read_text(big, MAX_SPEC_BYTES, "the file")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_text(latin, MAX_SPEC_BYTES, "the file")


@pytest.mark.parametrize("pattern, text", [(r"^(a+)+$", "a" * 100_000 + "b"), ("(?s)^(.+)+\x07", "x" * 100_000)])
def test_catastrophic_patterns_match_in_linear_time(pattern, text):
    start = time.perf_counter()
    assert compile_safe(pattern).search(text) is None
    assert time.perf_counter() - start < 0.5  # Python's re would backtrack for longer than the age of the universe


def test_patterns_re2_cannot_run_are_refused_with_the_reason():
    for pattern in (r"(a)\1", "(?=a)", "(?<!a)b"):
        with pytest.raises(RegexError, match="invalid regular expression for RE2"):
            compile_safe(pattern)
    with pytest.raises(RegexError, match="over the limit"):
        compile_safe("a" * 5000)


def test_printable_escapes_control_characters():
    assert printable("bad\x1b[2J\x00name\tok") == "bad\\x1b[2J\\x00name\tok"


def test_rule_and_task_regexes_run_through_the_safe_engine():
    from doctor.diagnose.conditions import apply_op
    from doctor.tasks.format import GenerationItem

    start = time.perf_counter()
    assert not apply_op("matches", "a" * 100_000 + "b", "^(a+)+$")
    item = GenerationItem(prompt="p", answer="a", regex="(?s)^(.+)+\x07")
    assert item.extract("x" * 100_000) == ""
    assert time.perf_counter() - start < 0.5
    assert GenerationItem(prompt="p", answer="42", regex=r"answer: (\d+)").extract("the answer: 42.") == "42"
