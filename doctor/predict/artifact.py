"""Fitted predictors as plain JSON (no pickle): model part + meta (versions, training-table hashes, date).

Floats are written with Python's shortest round-trip repr, so load(save(x)) == x exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from doctor.errors import ConfigError, DataError
from doctor.input.limits import MAX_ARTIFACT_BYTES, read_text

DEGRADATION_FILE = "degradation.json"
HEALTH_FILE = "baseline-health.json"
FORMAT = "model-doctor-predictor"
FORMAT_VERSION = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import numpy
    import pandas
    import statsmodels

    import doctor

    return {"model-doctor": doctor.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__,
            "statsmodels": statsmodels.__version__, "python": platform.python_version()}


def make_meta(kind: str, tables: list[Path], command: str) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_tables": {Path(t).name: file_sha256(t) for t in tables},
        "libraries": library_versions(), "command": command,
    }


def dumps(artifact: dict) -> str:
    return json.dumps(artifact, indent=1, sort_keys=True, allow_nan=False) + "\n"


def save_artifact(artifact: dict, path: Path) -> str:
    """Write atomically; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(artifact)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return hashlib.sha256(text.encode()).hexdigest()


def load_artifact(path: Path, expect: str) -> dict:
    """Read and check one artifact; any problem is a one-line DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no predictor artifact here (run `doctor predictor fit`)")
    try:
        artifact = json.loads(read_text(path, MAX_ARTIFACT_BYTES, "the predictor artifact"))
    except (ConfigError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable predictor artifact: {exc}") from None
    meta = artifact.get("meta", {}) if isinstance(artifact, dict) else {}
    if meta.get("format") != FORMAT or meta.get("kind") != expect:
        raise DataError(f"{path}: not a model-doctor '{expect}' predictor (meta.format/meta.kind)")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{path}: format_version {meta['format_version']} is newer than this tool reads")
    if "model" not in artifact:
        raise DataError(f"{path}: predictor artifact has no 'model' section")
    return artifact
