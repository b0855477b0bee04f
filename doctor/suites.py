"""Finding and loading checkup suites: a built-in name (`checkups/<name>.yaml`) or a file path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from doctor.errors import ConfigError
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
    raw = path.read_bytes()
    return load_model(path, Suite, raw.decode("utf-8", errors="replace")), path, hashlib.sha256(raw).hexdigest()
