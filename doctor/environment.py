"""The environment an examination ran in, for the audit trail."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from doctor import __version__
from doctor.results import Environment

_LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "pydantic", "onnx", "onnxruntime", "onnxruntime-gpu",
              "statsmodels", "scikit-learn")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def source_commit() -> str | None:
    """The git commit of the tool's own source when it runs from a checkout (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def describe(device: str, backend: str, seeds: dict[str, int], command: str | None = None) -> Environment:
    return Environment(
        tool_version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        libraries=library_versions(),
        device=device,
        backend=backend,
        seeds=seeds,
        command=command,
        git_commit=source_commit(),
    )
