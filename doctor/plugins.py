"""Built-in declarations found in a package, and third-party ones found through entry points.

Every extension point (modification kinds, metric groups, ...) is filled the same way: each module of its
built-in package declares one object under a fixed name, and an installed distribution adds more through an
entry point group (`model_doctor.modifications`, `model_doctor.metrics`, ...) whose value names the object,
e.g. `noise = doctor_noise:METHOD`. A plugin that fails to load is skipped with a warning naming it, so one
broken package cannot stop every command; what it would have added is then simply unknown.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)


def builtin(package: str, attribute: str) -> list[Any]:
    """`attribute` of every module in `package` that defines it, in module-name order."""
    pkg = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, attribute):
            found.append(getattr(module, attribute))
    return found


def installed(group: str) -> list[tuple[str, Any]]:
    """(entry point name, loaded object) for every entry point of `group`; broken ones are skipped."""
    out = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            out.append((ep.name, ep.load()))
        except Exception as exc:  # any import error of foreign code: skip it, say which and why
            log.warning("plugin %r (%s) in %s failed to load: %s: %s", ep.name, ep.value, group, type(exc).__name__, exc)
    return out


def resolve(target: Any) -> Any:
    """A callable given directly or as 'module:attribute' (imported on first use, keeping start-up light)."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
