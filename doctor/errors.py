"""Error types and exit codes.

Every error a user can cause is a `DoctorError`: the CLI prints it as one line and exits 2. Anything else is a
bug and keeps its traceback (shown with `-v`).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


class DoctorError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class ConfigError(DoctorError):
    """A malformed suite, rule or checkup file (the message names file, key path and line)."""


class ModelLoadError(DoctorError):
    """The model could not be found, read or trusted."""


class DataError(DoctorError):
    """An evaluation or calibration text could not be found or is too short."""


class ModificationError(DoctorError):
    """A modification cannot be applied to this model (recorded as a failed checkup)."""


class NumericError(ModificationError):
    """A modified model produced NaN or infinite values."""


def read_bytes(path: str | Path, error: type[DoctorError] = ConfigError, what: str = "file",
               source: str | None = None) -> bytes:
    """The bytes of `path`, or `error` with one line naming the file (`source`, default the path)."""
    source = source or str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{source}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{source}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{source}: cannot read {what}: {exc.strerror or exc}") from None


def read_text(path: str | Path, error: type[DoctorError] = ConfigError, what: str = "file",
              source: str | None = None) -> str:
    """The UTF-8 text of `path`, or `error` with one line naming the file: missing, unreadable or not UTF-8."""
    return decode_text(read_bytes(path, error, what, source), error, what, source or str(path))


def decode_text(raw: bytes, error: type[DoctorError], what: str, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
