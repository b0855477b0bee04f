"""The JSONL task format, its one-line errors, and the bundled tasks' reproducible build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.errors import DataError
from doctor.tasks import build
from doctor.tasks.format import GenerationItem, TaskFileError, bundled_tasks, load_task


def write(tmp_path: Path, lines: list, name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_bundled_tasks_load_with_the_built_sizes():
    names = bundled_tasks()
    assert {"tinystories-cloze", "tinystories-names", "tinystories-prompts"} <= set(names)
    cloze, names_task, prompts = (load_task(n) for n in ("tinystories-cloze", "tinystories-names", "tinystories-prompts"))
    assert len(cloze.multiple_choice) == build.CLOZE_ITEMS and len(cloze) == build.CLOZE_ITEMS
    assert len(names_task.generation) == build.NAME_ITEMS
    assert len(prompts.open) == build.PROMPT_ITEMS
    source = build.SOURCE.read_text(encoding="utf-8")
    for item in cloze.multiple_choice:
        assert len(set(item.choices)) == len(item.choices) == 4
        # the gold word really is the next word of the story
        gold = item.choices[item.gold]
        assert f"{item.context} {gold}" in source or f"{item.context}\n{gold}" in source
    for item in names_task.generation:
        assert item.answer in item.prompt  # the name was introduced earlier: it must be recalled, not guessed


def test_bundled_files_equal_a_fresh_build(tmp_path):
    assert build.stale_tasks() == []
    written = build.write_tasks(tmp_path)
    for path in written:
        assert path.read_bytes() == (build.DATA_DIR / path.name).read_bytes()
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "tinystories-cloze.jsonl").write_text("{}\n")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1


def test_a_different_seed_gives_different_items():
    docs = build.stories()
    assert build.cloze_items(docs, seed=0) != build.cloze_items(docs, seed=1)


def test_per_line_types_without_a_header(tmp_path):
    path = write(tmp_path, [
        {"type": "multiple_choice", "context": "a", "choices": ["b", "c"], "gold": 1},
        "",
        {"type": "generation", "prompt": "p", "answer": "x", "regex": r"(\w+)"},
        {"type": "open", "prompt": "q", "id": "q1", "meta": {"source": "me"}},
    ], name="my task!.jsonl")
    task = load_task(str(path))
    assert task.name == "my-task"  # usable in a metric key
    assert (len(task.multiple_choice), len(task.generation), len(task.open)) == (1, 1, 1)
    assert task.header.target_delimiter == " "


def test_header_sets_name_type_and_options(tmp_path):
    path = write(tmp_path, [
        {"format": "model-doctor-task", "name": "caps", "type": "generation", "ignore_case": True},
        {"prompt": "say it", "answer": "Yes"},
    ])
    task = load_task(str(path))
    assert task.name == "caps"
    assert task.exact_match(task.generation[0], "  yes ")
    assert not task.exact_match(task.generation[0], "yes sir")


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (['{"type": "open", "prompt": "a"}', "{not json"], ":2: invalid JSON"),
        (["[1, 2]"], ":1: each line must be a JSON object"),
        ([{"context": "a", "choices": ["b", "c"], "gold": 0}], ":1: type: missing"),
        ([{"type": "multiple_choice", "context": "a", "choices": ["b", "c"], "gold": 2}], ":1: gold: gold 2 is out"),
        ([{"type": "multiple_choice", "context": "a", "choices": ["b"], "gold": 0}], ":1: choices:"),
        ([{"type": "open", "prompt": "a"}, {"type": "open", "prompt": "b", "colour": 1}], ":2: colour: Extra inputs"),
        ([{"type": "generation", "prompt": "a", "answer": "b", "regex": "("}], ":1: regex: invalid regular expression"),
        ([{"type": "essay", "prompt": "a"}], ":1: type: Input tag 'essay'"),
        ([{"format": "model-doctor-task", "type": "open", "nme": "x"}], ":1: nme: Extra inputs"),
        ([{"format": "model-doctor-task", "name": "x"}], ": no items"),
    ],
)
def test_bad_lines_fail_with_one_line_naming_file_line_and_field(tmp_path, lines, where):
    path = write(tmp_path, lines)
    with pytest.raises(TaskFileError) as info:
        load_task(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and where in message
    assert isinstance(info.value, DataError)


def test_unknown_reference_names_the_bundled_tasks():
    with pytest.raises(TaskFileError, match="tinystories-cloze"):
        load_task("no-such-task")


@pytest.mark.parametrize(
    ("regex", "continuation", "answer"),
    [(None, "  Lily \n", "Lily"), (r"\b(Lily)\b", " and then Lily's mom", "Lily"), (r"\d+", "it was 42.", "42"),
     (r"\b(Tom)\b", " She said", "")],
)
def test_answer_extraction(regex, continuation, answer):
    item = GenerationItem(prompt="p", answer="x", regex=regex)
    assert item.extract(continuation) == answer
