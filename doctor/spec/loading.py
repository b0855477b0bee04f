"""YAML loading that keeps line numbers, so validation errors name file, key path and line.

Used for suites here and for rule files in `doctor.diagnose`: one loader, one error format
(`file:line: key.path: message`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from doctor.errors import ConfigError
from doctor.input.limits import MAX_SPEC_BYTES, check_yaml_size, read_text
from doctor.spec.modification import MODIFICATION_KINDS

M = TypeVar("M", bound=BaseModel)


class _Marked:
    """Parsed YAML plus the line of every key path."""

    def __init__(self, data: Any, lines: dict[tuple, int]) -> None:
        self.data = data
        self.lines = lines


def _construct(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError("keys must be plain scalars", key_node.start_mark.line + 1, path)
            key = _resolve_scalar(key_node)
            if key in out:
                raise ConfigError(f"duplicate key '{key}'", key_node.start_mark.line + 1, path + (key,))
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), lines) for i, child in enumerate(node.value)]
    return _resolve_scalar(node)


def _resolve_scalar(node: yaml.Node) -> Any:
    # the composed node already carries its resolved tag; the safe constructor turns it into a value
    return yaml.SafeLoader("").construct_object(node, deep=True)


def parse_yaml(text: str, source: str) -> _Marked:
    """Parse YAML safely (no tags that build objects), keeping a line for each key path.

    Size, nesting and alias expansion are checked on the event stream first (`doctor.input.limits`)."""
    check_yaml_size(text, source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}{line}: invalid YAML: {problem}") from None
    if root is None:
        raise ConfigError(f"{source}: the file is empty")
    lines: dict[tuple, int] = {}
    try:
        data = _construct(root, (), lines)
    except ConfigError as exc:
        message, line, path = exc.args
        raise ConfigError(f"{source}:{line}: {dotted(path)}: {message}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return _Marked(data, lines)


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _yaml_path(loc: tuple, data: Any) -> tuple:
    """Map a Pydantic error location onto the YAML document, dropping union tags like 'quantize'."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and not isinstance(part, int) and part not in node:
            # a missing key or an unknown field: name it, but the line is its parent's
            if part in _UNION_TAGS:
                continue
            path.append(part)
            break
    return tuple(path)


_KINDS = ", ".join(MODIFICATION_KINDS)
# Pydantic puts the union member's tag (and validator wrappers) into error locations; YAML has no such key
_UNION_TAGS = frozenset({*MODIFICATION_KINDS, "function-after"})


MAX_REPORTED = 20  # problems listed per file; a file of a million unknown keys must not print a million lines


def format_validation_error(exc: ValidationError, marked: _Marked, source: str) -> str:
    """One line per problem: `file:line: key.path: message` (at most `MAX_REPORTED`, then a count)."""
    out = []
    errors = exc.errors()
    for err in errors[:MAX_REPORTED]:
        path = _yaml_path(tuple(err["loc"]), marked.data)
        line = next((marked.lines[path[:i]] for i in range(len(path), -1, -1) if path[:i] in marked.lines), None)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "union_tag_invalid":
            message = f"unknown kind {err['ctx']['tag']!r}; known: {err['ctx']['expected_tags']}"
        elif err["type"] == "union_tag_not_found":
            message = f"missing key 'kind'; one of {_KINDS}"
        out.append(f"{source}:{line}: {dotted(path)}: {message}")
    if len(errors) > MAX_REPORTED:
        out.append(f"{source}: ... and {len(errors) - MAX_REPORTED} more problems")
    return "\n".join(out)


def load_model(path: str | Path, model: type[M], text: str | None = None) -> M:
    """Read a YAML file into a Pydantic model, raising `ConfigError` with located one-line messages."""
    path = Path(path)
    source = str(path)
    if text is None:
        text = read_text(path, MAX_SPEC_BYTES, "the file")
    marked = parse_yaml(text, source)
    if not isinstance(marked.data, dict):
        raise ConfigError(f"{source}:1: <root>: expected a mapping, got {type(marked.data).__name__}")
    try:
        return model.model_validate(marked.data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, marked, source)) from None
