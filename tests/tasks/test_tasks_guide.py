"""docs/tasks.md: its example file loads as documented, and the inline copy equals the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from doctor.tasks.format import TaskFileError, load_task
from doctor.tasks.scoring import pick

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLE = DOCS / "examples" / "custom-task.jsonl"


def test_guide_shows_the_example_file_verbatim():
    guide = DOCS.joinpath("tasks.md").read_text(encoding="utf-8")
    block = guide.split("```json\n", 1)[1].split("```", 1)[0]
    assert block == EXAMPLE.read_text(encoding="utf-8")


def test_example_task_loads_with_every_type_and_header_option():
    task = load_task(str(EXAMPLE))
    assert task.name == "my-stories"
    assert (len(task.multiple_choice), len(task.generation), len(task.open)) == (2, 1, 1)
    assert task.header.max_new_tokens == 8 and task.header.ignore_case
    gen = task.generation[0]
    assert task.exact_match(gen, " max ran to the park.")  # ignore_case, regex group
    assert not task.exact_match(gen, " the dog ran.")
    assert pick([-3.0, -2.0, -9.0], task.multiple_choice[0].choices) == (1, 1)


def test_documented_error_line(tmp_path):
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[1]) | {"gold": 4}
    path = tmp_path / "my.jsonl"
    path.write_text("\n".join([lines[0], lines[2], json.dumps(bad)]) + "\n", encoding="utf-8")
    with pytest.raises(TaskFileError) as err:
        load_task(str(path))
    assert str(err.value) == f"{path}:3: gold: gold 4 is out of range for 3 choices"
