"""Limits on everything a user supplies, checked before the expensive step that each one protects.

A hostile or careless file must be refused in milliseconds with one line that names the file, what exceeded
and the limit, never hang or exhaust memory. Each limit is a named constant so an error can quote it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from doctor.errors import ConfigError, DoctorError

# suite and rule files: small hand-written YAML
MAX_SPEC_BYTES = 1 << 20  # 1 MiB; the largest built-in suite is 12 KB
MAX_YAML_DEPTH = 64  # nested mappings/sequences
MAX_YAML_NODES = 100_000  # nodes after expanding every alias (an alias bomb is refused from its size)
# task files (JSONL) and text corpora
MAX_TASK_BYTES = 64 << 20
MAX_TASK_LINE_CHARS = 100_000  # one item; a line this long is not a benchmark item but a tokenizer bomb
MAX_TASK_ITEMS = 100_000
MAX_TASK_CHARS = 16 << 20  # all items' text together, bounding the tokens any tokenizer can produce
MAX_RESULTS_BYTES = 512 << 20  # results.json of a long examination with per-layer statistics
MAX_ARTIFACT_BYTES = 64 << 20  # a fitted predictor (JSON); the shipped ones are under 100 KB
MAX_CORPUS_BYTES = 32 << 20  # a tokenizer needs ~30 bytes per character at once; wikitext-2 test is 1.3 MB
# rule templates
MAX_TEMPLATE_CHARS = 10_000
MAX_TEMPLATE_OPS = 100_000  # loop iterations and calls while rendering one template
MAX_TEMPLATE_SECONDS = 1.0
MAX_TEMPLATE_OUTPUT = 100_000  # characters of any intermediate string or list
# regular expressions (matched by RE2 in linear time; the length bounds its compiled program)
MAX_REGEX_CHARS = 1_000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def read_text(path: Path, limit: int, what: str, source: str | None = None) -> str:
    """A UTF-8 file no larger than `limit` bytes; `ConfigError` naming the file, size and limit otherwise."""
    source = source or str(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise ConfigError(f"{source}: {what} is {size:,} bytes, over the limit of {limit:,} bytes")
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)  # a file growing while read is still bounded
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a folder, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise ConfigError(f"{source}: {what} is over the limit of {limit:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None


def check_yaml_size(text: str, source: str) -> None:
    """Refuse deep nesting, cyclic aliases and alias bombs from the event stream, before building anything.

    The running count is the size the document will have once every alias is expanded; an anchored node's
    size is known when it closes, so an alias adds it without expanding anything: nine levels of ten aliases
    each (10^9 nodes) are refused after a few dozen events.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, running count when it opened)
    total = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    cyclic = any(anchor == event.anchor for anchor, _ in open_nodes)
                    reason = "refers to a node that contains it (cyclic alias)" if cyclic else "is not defined"
                    raise ConfigError(f"{source}:{line}: alias *{event.anchor} {reason}")
                total += sizes[event.anchor]
            elif isinstance(event, yaml.ScalarEvent):
                if hit := _CONTROL.search(event.value):
                    # names and messages from spec files reach terminals and reports
                    raise ConfigError(f"{source}:{line}: control character {hit.group()!r} is not allowed in a spec file")
                total += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(open_nodes) >= MAX_YAML_DEPTH:
                    raise ConfigError(f"{source}:{line}: nesting deeper than the limit of {MAX_YAML_DEPTH} levels")
                open_nodes.append((event.anchor, total))
                total += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, opened_at = open_nodes.pop()
                if anchor is not None:
                    sizes[anchor] = total - opened_at
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source}:{line}: more than {MAX_YAML_NODES:,} YAML nodes once aliases are expanded "
                    "(the limit for a spec file)"
                )
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml refuses very deep flow nesting before emitting any event
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}{where}: nesting deeper than the limit of {MAX_YAML_DEPTH} levels") from None
        return  # the composing parser reports syntax errors with their line


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_line(text: str, field: str, source: str) -> None:
    """Names are printed to terminals and reports: control characters (NUL, ESC ...) are refused."""
    hit = _CONTROL.search(text)
    if hit:
        raise DoctorError(f"{source}: {field}: control character {hit.group()!r} is not allowed")


def printable(text: str) -> str:
    """A message safe to print: control characters shown escaped, never sent raw to a terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
