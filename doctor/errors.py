"""Error types and exit codes.

Every error a user can cause is a `DoctorError`: the CLI prints it as one line and exits 2. Anything else is a
bug and keeps its traceback (shown with `-v`).
"""

from __future__ import annotations

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
