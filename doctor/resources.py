"""Where bundled files live: the demo model, texts, and the built-in rules, suites and predictors.

In a source checkout the built-ins are the top-level `rules/`, `checkups/` and `predictors/` folders; in an
installed wheel they are the `doctor.builtin.*` packages mapped from those folders.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets"
DEMO_MODEL = ASSETS / "models" / "stories260k"
DEMO_CANDIDATE = ASSETS / "models" / "stories260k-gptq-w4g32"
"""The demo model after GPTQ 4-bit g32, packed as a GPTQ checkpoint: a ready-made artifact to judge."""
DATA = ASSETS / "data"


def _builtin(name: str) -> Path:
    checkout = PACKAGE.parent / name
    if checkout.is_dir() and (PACKAGE.parent / "pyproject.toml").is_file():
        return checkout
    return PACKAGE / "builtin" / name


RULES_DIR = _builtin("rules")
CHECKUPS_DIR = _builtin("checkups")
PREDICTORS_DIR = _builtin("predictors")
