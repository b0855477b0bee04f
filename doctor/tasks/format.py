"""Task files: one JSON object per line (JSONL), read into validated items.

A file may start with a header line, an object with `"format": "model-doctor-task"`:

    {"format": "model-doctor-task", "name": "my-cloze", "type": "multiple_choice", "description": "...",
     "target_delimiter": " ", "max_new_tokens": 8, "ignore_case": false}

Every other line is one item. Its `type` comes from the line itself or, when absent, from the header's `type`:

- `multiple_choice`: `{"context": str, "choices": [str, ...], "gold": int}`. Each choice is scored by the
  log-likelihood of `target_delimiter + choice` after `context`; `acc` takes the highest sum, `acc_norm` the
  highest sum divided by the choice's length in characters, as lm-evaluation-harness does.
- `generation` (closed-ended): `{"prompt": str, "answer": str, "regex": str (optional)}`. The continuation is
  generated; the answer is the regex's first group (or whole match) when a regex is given, else the stripped
  continuation; scored by exact match with `answer`.
- `open` (open-ended): `{"prompt": str}`. Continuations feed the generation-quality metrics.

Any item may carry an `id` (str) and `meta` (object). Blank lines are skipped. A task reference is a bundled
task name (see `bundled_tasks()`) or a path to a `.jsonl` file; bad input raises `TaskFileError` naming file, line, field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from doctor.errors import ConfigError, DataError
from doctor.input.limits import MAX_TASK_BYTES, MAX_TASK_CHARS, MAX_TASK_ITEMS, MAX_TASK_LINE_CHARS, read_text
from doctor.input.safe_regex import RegexError, compile_safe

DATA_DIR = Path(__file__).resolve().parent / "data"
HEADER_FORMAT = "model-doctor-task"
DEFAULT_TASKS = ("tinystories-cloze",)  # what the 'tasks' metric measures when a checkup names none
ITEM_TYPES = ("multiple_choice", "generation", "open")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class TaskFileError(DataError):
    """A task file that cannot be read or validated (the message names file, line and field)."""


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class MultipleChoiceItem(_Item):
    type: Literal["multiple_choice"] = "multiple_choice"
    context: str
    choices: list[str] = Field(min_length=2)
    gold: int = Field(ge=0, strict=True)  # strict: JSON `true` is not choice 1

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not c for c in value):
            raise ValueError("choices must be non-empty strings")
        return value

    @field_validator("gold")
    @classmethod
    def _gold_in_range(cls, value: int, info: ValidationInfo) -> int:
        # a field validator (not a model one) so the error names the field `gold`
        choices = info.data.get("choices")
        if choices is not None and value >= len(choices):
            raise ValueError(f"gold {value} is out of range for {len(choices)} choices")
        return value


class GenerationItem(_Item):
    type: Literal["generation"] = "generation"
    prompt: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_safe(value)
            except RegexError as exc:
                raise ValueError(str(exc)) from None
        return value

    def extract(self, continuation: str) -> str:
        """The answer a continuation gives: the regex's first group (or match), else the stripped text."""
        if self.regex is None:
            return continuation.strip()
        match = compile_safe(self.regex).search(continuation)
        if match is None:
            return ""
        return (match.group(1) if match.groups() else match.group(0)).strip()


class OpenItem(_Item):
    type: Literal["open"] = "open"
    prompt: str = Field(min_length=1)


Item = Annotated[MultipleChoiceItem | GenerationItem | OpenItem, Field(discriminator="type")]
_ITEM = TypeAdapter(Item)


class Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["model-doctor-task"]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["multiple_choice", "generation", "open"] | None = None
    description: str = ""
    source: str = ""
    target_delimiter: str = Field(" ", description="put between context and each choice (lm-eval's default)")
    max_new_tokens: int = Field(16, ge=1, le=1024, description="closed-ended generation budget per item")
    ignore_case: bool = False


@dataclass
class Task:
    """A loaded task file: its header and items, split by type."""

    name: str
    path: Path
    header: Header
    multiple_choice: list[MultipleChoiceItem] = field(default_factory=list)
    generation: list[GenerationItem] = field(default_factory=list)
    open: list[OpenItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.multiple_choice) + len(self.generation) + len(self.open)

    def exact_match(self, item: GenerationItem, continuation: str) -> bool:
        got, want = item.extract(continuation), item.answer.strip()
        if self.header.ignore_case:
            got, want = got.casefold(), want.casefold()
        return got == want


def bundled_tasks() -> dict[str, Path]:
    """Bundled task name -> file (every `*.jsonl` in `doctor/tasks/data`)."""
    return {p.stem: p for p in sorted(DATA_DIR.glob("*.jsonl"))}


def resolve_task(ref: str) -> Path:
    bundled = bundled_tasks()
    if ref in bundled:
        return bundled[ref]
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    raise TaskFileError(f"{ref}: not a bundled task ({', '.join(bundled) or 'none'}) nor a task file")


def load_task(ref: str) -> Task:
    """A bundled task by name, or a user JSONL file, validated line by line."""
    path = resolve_task(ref)
    try:
        lines = read_text(path, MAX_TASK_BYTES, "the task file").splitlines()
    except ConfigError as exc:
        raise TaskFileError(str(exc)) from None
    header = Header(format=HEADER_FORMAT)
    task: Task | None = None
    chars, header_line = 0, 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        chars += len(line)
        _check_size(path, number, line, chars, len(task) if task else 0)
        obj = _parse_line(path, number, line)
        if task is None and obj.get("format") == HEADER_FORMAT:
            header, header_line = _validate(Header, obj, path, number), number
            continue
        task = task or Task(name=_task_name(path, header, header_line if header.name else number), path=path, header=header)
        if "type" not in obj and header.type is not None:
            obj = {**obj, "type": header.type}
        item = _validate(_ITEM, obj, path, number)
        getattr(task, item.type).append(item)
    if task is None:
        raise TaskFileError(f"{path}: no items (a task file needs at least one JSON object per line)")
    return task


def _check_size(path: Path, number: int, line: str, chars: int, items: int) -> None:
    """Bounds checked before a line is parsed, so no tokenizer ever sees a line or a file this large."""
    if len(line) > MAX_TASK_LINE_CHARS:
        raise TaskFileError(
            f"{path}:{number}: line of {len(line):,} characters, over the limit of {MAX_TASK_LINE_CHARS:,} per item"
        )
    if chars > MAX_TASK_CHARS:
        raise TaskFileError(f"{path}:{number}: task text over the limit of {MAX_TASK_CHARS:,} characters per file")
    if items >= MAX_TASK_ITEMS:
        raise TaskFileError(f"{path}:{number}: more than the limit of {MAX_TASK_ITEMS:,} items per file")


def _task_name(path: Path, header: Header, number: int) -> str:
    """Metrics are keyed by task name (`acc:<name>`): a user file may not take a bundled task's name, or its
    numbers would be compared with the bundled task's baseline."""
    name = header.name or _name_from(path)
    bundled = bundled_tasks()
    if name in bundled and path.resolve() != bundled[name].resolve():
        where = "name" if header.name else "file name"
        raise TaskFileError(
            f"{path}:{number}: {where}: '{name}' is the name of a bundled task; "
            "give this task another name (header \"name\")"
        )
    return name


def _name_from(path: Path) -> str:
    return _NAME.sub("-", path.stem.removesuffix(".jsonl")).strip("-") or "task"


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{path}:{number}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise TaskFileError(f"{path}:{number}: JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise TaskFileError(f"{path}:{number}: each line must be a JSON object, got {type(obj).__name__}")
    return obj


def _validate(model: Any, obj: dict[str, Any], path: Path, number: int) -> Any:
    if model is _ITEM and "type" not in obj:
        raise TaskFileError(
            f"{path}:{number}: type: missing; give each line a 'type' ({', '.join(ITEM_TYPES)}) or a header "
            f'line {{"format": "{HEADER_FORMAT}", "type": ...}}'
        )
    try:
        return model.validate_python(obj) if model is _ITEM else model.model_validate(obj)
    except ValidationError as exc:
        error = exc.errors()[0]
        # drop the union tag Pydantic puts first in discriminated-union locations
        loc = [str(p) for p in error["loc"] if str(p) not in ITEM_TYPES] or ["<line>"]
        if error["type"] == "union_tag_invalid":
            loc = ["type"]
        message = error["msg"].removeprefix("Value error, ")
        raise TaskFileError(f"{path}:{number}: {'.'.join(loc)}: {message}") from None
