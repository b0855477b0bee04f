"""Packaging glue that pyproject.toml cannot express: the top-level rules/, checkups/ and predictors/ folders
ship inside the package as doctor.builtin.*, and every data file below doctor/ is package data."""

from pathlib import Path

from setuptools import find_packages, setup

BUILTIN = {
    "doctor.builtin.rules": "rules",
    "doctor.builtin.checkups": "checkups",
    "doctor.builtin.predictors": "predictors",
    "doctor.builtin.predictors.data": "predictors/data",
}
DATA_SUFFIXES = {".yaml", ".json", ".jsonl", ".csv", ".md", ".txt", ".raw", ".tokens", ".safetensors", ".j2", ".css"}


def data_files(root: str) -> list[str]:
    """Every data file below `root`, relative to it (setuptools globs do not descend reliably)."""
    base = Path(root)
    return sorted(
        str(p.relative_to(base)) for p in base.rglob("*")
        if p.is_file() and p.suffix in DATA_SUFFIXES and "__pycache__" not in p.parts
    )


setup(
    packages=find_packages(include=["doctor", "doctor.*"]) + list(BUILTIN),
    package_dir={"": ".", **BUILTIN},
    package_data={
        "doctor": [f for f in data_files("doctor") if not f.startswith("builtin/")],
        **{name: [f for f in data_files(folder) if "/" not in f] for name, folder in BUILTIN.items()},
    },
)
