"""results.json: written atomically (temp file + os.replace) and read back with one-line errors."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from doctor.errors import ConfigError, DoctorError
from doctor.input.limits import MAX_RESULTS_BYTES, read_text
from doctor.results import Examination


class ResultsFileError(DoctorError):
    """A results.json that is missing, unreadable or not an examination record."""


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` so readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a report is as readable as any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def dump_examination(exam: Examination) -> str:
    """Standard JSON; non-finite floats become the strings "Infinity", "-Infinity" and "NaN".

    Pydantic would write them as null, which no longer loads as a float; pydantic reads these strings back as
    floats, and strict JSON readers still parse the file.
    """
    return json.dumps(_finite_json(exam.model_dump(mode="json")), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


def roundtrip(exam: Examination) -> Examination:
    """The examination exactly as a re-render will read it back from results.json."""
    return Examination.model_validate_json(dump_examination(exam))


def write_results(exam: Examination, path: Path) -> Path:
    return write_text_atomic(path, dump_examination(exam))


def load_examination(path: str | Path) -> Examination:
    """Read a results.json; a missing, malformed or foreign file raises ResultsFileError (one line)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ResultsFileError(f"{path}: no such results file")
    try:
        text = read_text(path, MAX_RESULTS_BYTES, "the results file")
    except ConfigError as exc:
        raise ResultsFileError(str(exc)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or "patient" not in data:
        raise ResultsFileError(f"{path}: not a model-doctor results file (no 'patient' record)")
    try:
        return Examination.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ResultsFileError(f"{path}: {where}: {first['msg']}{more}") from None
