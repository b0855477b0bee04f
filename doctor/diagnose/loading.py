"""Reading rule files: built-in `rules/` plus user directories, a user rule overriding a built-in one by id.

Errors are one line each, `file:line: rule <id>: key.path: message`, from the same YAML loader as suites
(`doctor.spec.loading.parse_yaml`, which keeps the line of every key path).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from doctor.diagnose.conditions import OPERAND_KEYS, TAG_PREFIXES
from doctor.diagnose.rule import Rule, check_rule
from doctor.errors import ConfigError
from doctor.input.limits import MAX_SPEC_BYTES, read_text
from doctor.resources import RULES_DIR
from doctor.spec.loading import MAX_REPORTED, dotted, parse_yaml

log = logging.getLogger(__name__)

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing key",
}


@dataclass(frozen=True)
class LoadedRule:
    rule: Rule
    path: Path
    source: str  # how reports name the file: 'builtin:<name>' or the path given
    sha256: str
    builtin: bool


def _line(lines: dict[tuple, int], path: tuple) -> int | None:
    for i in range(len(path), -1, -1):
        if path[:i] in lines:
            return lines[path[:i]]
    return None


def _clean_loc(loc: tuple) -> tuple:
    """Drop union tags that are not keys of the document ('condition:all', 'operand:metric', ...)."""
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith(TAG_PREFIXES)))


def _format(problems: list[tuple[tuple, str]], lines: dict[tuple, int], source: str, rule_id: str) -> str:
    out = []
    for path, message in problems[:MAX_REPORTED]:
        line = _line(lines, path)
        where = f"{source}:{line}" if line is not None else source
        out.append(f"{where}: rule {rule_id}: {dotted(path)}: {message}")
    if len(problems) > MAX_REPORTED:
        out.append(f"{source}: rule {rule_id}: ... and {len(problems) - MAX_REPORTED} more problems")
    return "\n".join(out)


def _suggestion(err: dict) -> str:
    """'did you mean' for a mistyped operand or condition key."""
    known = {"operand": OPERAND_KEYS, "condition": ("all", "any", "not", "value")}.get(err["type"])
    if not known or not isinstance(err.get("input"), dict):
        return ""
    for key in err["input"]:
        close = difflib.get_close_matches(str(key), known, n=1)
        if close:
            return f" (did you mean '{close[0]}' instead of '{key}'?)"
    return ""


def _validation_problems(exc: ValidationError) -> list[tuple[tuple, str]]:
    problems = []
    for err in exc.errors():
        message = _MESSAGES.get(err["type"], err["msg"].removeprefix("Value error, "))
        problems.append((_clean_loc(tuple(err["loc"])), message + _suggestion(err)))
    return problems


def parse_rule(text: str, source: str) -> Rule:
    """Validate one rule document, raising `ConfigError` with located one-line messages."""
    try:
        marked = parse_yaml(text, source)
    except RecursionError:
        raise ConfigError(f"{source}: nesting too deep") from None
    data: Any = marked.data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: <root>: a rule file holds one mapping, got {type(data).__name__}")
    rule_id = data.get("id") if isinstance(data.get("id"), str) else Path(source).stem
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(_validation_problems(exc), marked.lines, source, rule_id)) from None
    except RecursionError:
        raise ConfigError(f"{source}: rule {rule_id}: conditions nested too deep") from None
    problems = check_rule(rule)
    if problems:
        raise ConfigError(_format(problems, marked.lines, source, rule.id))
    return rule


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, source: str) -> Rule:
    """Rules are immutable once validated, so the same file text needs validating only once per process."""
    return parse_rule(text, source)


def load_rule_file(path: str | Path, source: str | None = None) -> LoadedRule:
    path = Path(path)
    source = source or str(path)
    text = read_text(path, MAX_SPEC_BYTES, "the rule file", source)
    rule = _parse_cached(text, source)
    builtin = source.startswith("builtin:")
    return LoadedRule(rule, path, source, hashlib.sha256(text.encode("utf-8")).hexdigest(), builtin)


def rule_files(directory: Path) -> list[Path]:
    if directory.is_file():
        return [directory]
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such rule directory")
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_rules(rule_dirs: list[Path] | None = None, *, builtin: bool = True) -> list[LoadedRule]:
    """Built-in rules, then user rules (directories or files); a user rule replaces a built-in one by id.

    All files are read and every problem is reported at once. Disabled rules (`enabled: false`) are kept,
    so a user can switch a built-in rule off by overriding it.
    """
    errors: list[str] = []
    by_id: dict[str, LoadedRule] = {}
    sources: list[tuple[Path, str, bool]] = []
    if builtin and RULES_DIR.is_dir():
        sources += [(p, f"builtin:{p.name}", True) for p in rule_files(RULES_DIR)]
    for directory in rule_dirs or []:
        try:
            sources += [(p, str(p), False) for p in rule_files(Path(directory))]
        except ConfigError as exc:
            errors.append(str(exc))
    for path, source, is_builtin in sources:
        try:
            loaded = load_rule_file(path, source)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        previous = by_id.get(loaded.rule.id)
        if previous is not None and (not previous.builtin or is_builtin):
            errors.append(f"{source}:1: rule {loaded.rule.id}: id: also defined in {previous.source}")
            continue
        if previous is not None:
            log.info("rule %s from %s overrides %s", loaded.rule.id, source, previous.source)
        by_id[loaded.rule.id] = loaded
    if errors:
        raise ConfigError("\n".join(errors))
    return list(by_id.values())
