"""Finding and loading checkup suites: a built-in name (`checkups/<name>.yaml`) or a file path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from doctor.errors import ConfigError
from doctor.input.limits import MAX_SPEC_BYTES, read_text
from doctor.resources import CHECKUPS_DIR
from doctor.spec.checkup import Suite
from doctor.spec.loading import load_model


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CHECKUPS_DIR.glob("*.yaml"))}


def suite_path(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{ref}: no such suite file")
        return path
    suites = builtin_suites()
    if ref not in suites:
        import difflib

        close = difflib.get_close_matches(ref, suites, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; built-in suites: {', '.join(suites)}"
        raise ConfigError(f"{ref}: unknown suite{hint}")
    return suites[ref]


def load_suite(ref: str) -> tuple[Suite, Path, str]:
    """The validated suite, its file and the file's SHA-256."""
    path = suite_path(ref)
    text = read_text(path, MAX_SPEC_BYTES, "the suite file", ref)
    return load_model(path, Suite, text), path, hashlib.sha256(text.encode("utf-8")).hexdigest()
