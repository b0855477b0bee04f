"""The environment an examination ran in, for the audit trail."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

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


def describe(device: str, backend: str, seeds: dict[str, int]) -> Environment:
    return Environment(
        tool_version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        libraries=library_versions(),
        device=device,
        backend=backend,
        seeds=seeds,
    )
