"""The registry of modification kinds: the one source of the spec union, the kind list, summaries, compression
levels, the predictor's case mapping and the restore contract test's parametrisation.

A kind is one module in `doctor.modifications.kinds` (or an installed plugin, entry point group
`model_doctor.modifications`) that declares `METHOD = ModificationMethod(...)`. Nothing here imports torch: the
implementation is named as 'module:function' and imported when a checkup first applies the kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field

from doctor.plugins import builtin, installed, resolve

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "model_doctor.modifications"
CompressionUnit = Literal["bits", "sparsity", "params_ratio", "layers", "none"]


class Unsupported(Exception):
    """This modification has no counterpart in the predictor's training table (the reason is the message)."""


@dataclass(frozen=True)
class Compression:
    """How hard a kind compresses: what its level measures, and the level of one modification (higher: harsher).

    `level(modification, realized)` reads the spec as a dict (as stored in results.json) and the realized facts;
    levels are comparable within a kind only. Unit 'none': the kind does not compress (level always None).
    """

    unit: CompressionUnit
    level: Callable[[dict[str, Any], dict[str, Any]], float | None] | None = None

    def of(self, modification: dict[str, Any], realized: dict[str, Any]) -> float | None:
        return None if self.level is None else self.level(modification, realized)


NO_COMPRESSION = Compression("none")


@dataclass(frozen=True)
class ModificationMethod:
    """Everything the rest of model-doctor needs to know about one modification kind.

    - `spec`: the Pydantic parameters model; its `kind` field is `Literal[kind]`.
    - `apply(spec, ctx) -> Applied`: changes `ctx.patient` recording every change in `ctx.undo` (or a
      'module:function' string naming it).
    - `summary(modification_dict) -> str`: one line naming what a checkup did, for the reports.
    - `compression`: its compression level (`NO_COMPRESSION` when it does not compress).
    - `predictor(modification_dict, realized, layers) -> dict`: the predictor Case fields (kind, method, bits,
      group_size, sparsity), raising `Unsupported` for a variant without published data; None: the kind has no
      expectation, and the report says so.
    - `examples`: small specs (dicts) of this kind that the contract test applies to the demo model and checks
      for bit-exact restore, summary, compression level and predictor mapping; at least one is required.
    - `rank`: order in kind lists, the union and the JSON Schema (built-ins 10..90; plugins default after them).
    - `slow`: applying an example takes tens of seconds (an export): the contract test's restore check runs
      it under the `slow` marker.
    - `needs`: a layout the dense demo model lacks ('experts': a mixture of experts); the contract test then
      checks the examples' restore on a tiny random model that has it.
    """

    kind: str
    spec: type
    apply: Callable[[Any, Any], Any] | str
    summary: Callable[[dict[str, Any]], str]
    compression: Compression
    predictor: Callable[[dict[str, Any], dict[str, Any], int], dict[str, Any]] | None
    examples: tuple[dict[str, Any], ...]
    rank: int = 500
    slow: bool = False
    needs: str | None = None
    description: str = field(default="")

    def implementation(self) -> Callable[[Any, Any], Any]:
        return resolve(self.apply)


def _check(method: Any, origin: str) -> str | None:
    """Why `method` cannot be registered, or None."""
    if not isinstance(method, ModificationMethod):
        return f"{origin}: expected a ModificationMethod, got {type(method).__name__}"
    kind_field = getattr(method.spec, "model_fields", {}).get("kind")
    if kind_field is None or get_args(kind_field.annotation) != (method.kind,):
        return f"{origin}: spec {getattr(method.spec, '__name__', method.spec)} needs `kind: Literal['{method.kind}']`"
    if not method.examples:
        return f"{origin}: kind '{method.kind}' declares no examples for the contract test"
    return None


@cache
def methods() -> dict[str, ModificationMethod]:
    """Every registered kind by name, built-ins first; a plugin cannot replace a built-in kind."""
    found: dict[str, ModificationMethod] = {}
    candidates = [(m, "doctor.modifications.kinds") for m in builtin("doctor.modifications.kinds", "METHOD")]
    candidates += [(m, f"plugin {name!r}") for name, m in installed(ENTRY_POINT_GROUP)]
    for method, origin in candidates:
        problem = _check(method, origin)
        if problem is None and method.kind in found:
            problem = f"{origin}: kind '{method.kind}' is already registered"
        if problem:
            log.warning("modification kind skipped: %s", problem)
            continue
        found[method.kind] = method
    return dict(sorted(found.items(), key=lambda item: (item[1].rank, item[0])))


def kinds() -> tuple[str, ...]:
    return tuple(methods())


def method(kind: str) -> ModificationMethod:
    try:
        return methods()[kind]
    except KeyError:
        raise KeyError(f"unknown modification kind '{kind}'; known: {', '.join(methods())}") from None


@cache
def modification_union() -> Any:
    """The discriminated union of every registered spec; specs that refer to `Modification` (compose) are
    completed with it, so a plugin kind can be a compose step too."""
    specs = tuple(m.spec for m in methods().values())
    union = Annotated[Union[specs], Field(discriminator="kind")]  # noqa: UP007 - built from a runtime tuple
    for spec in specs:
        if not spec.__pydantic_complete__:
            spec.model_rebuild(_types_namespace={"Modification": union})
    return union


def apply_modification(spec: Any, ctx: Any) -> Any:
    """Apply `spec` (recording every change in `ctx.undo`) and return its realized facts (`Applied`)."""
    return method(spec.kind).implementation()(spec, ctx)


def summary(modification: dict[str, Any]) -> str:
    """One line naming what a checkup did; an unregistered kind (a results file from elsewhere) lists its fields."""
    kind = str(modification.get("kind", "?"))
    registered = methods().get(kind)
    if registered is not None:
        return registered.summary(modification)
    from doctor.formatting import value_text

    extra = [f"{k}={value_text(v)}" for k, v in sorted(modification.items()) if k != "kind" and v is not None]
    return " ".join([kind, *extra])


def compression_level(modification: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """One number ordering how hard a modification compresses, comparable within a kind (higher: harsher)."""
    registered = methods().get(str(modification.get("kind")))
    return None if registered is None else registered.compression.of(modification, realized)


def pick(realized: dict[str, Any], modification: dict[str, Any], *keys: str) -> Any:
    """The first given value of `keys`, realized values before requested ones (for predictor mappings)."""
    for source in (realized, modification):
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def case_fields(modification: dict[str, Any], realized: dict[str, Any], layers: int) -> dict[str, Any]:
    """The predictor Case fields of one leaf modification; `Unsupported` when it has no expectation."""
    kind = modification.get("kind")
    registered = methods().get(str(kind))
    if registered is None or registered.predictor is None:
        raise Unsupported(f"no published data for modification kind '{kind}'")
    return registered.predictor(modification, realized, layers)


def no_expectation(leaf_kinds: list[str]) -> str | None:
    """Why a modification made of these leaf kinds has no expectation by declaration, or None if it may have one."""
    missing = [kind for kind in leaf_kinds if kind not in methods() or methods()[kind].predictor is None]
    return f"no published data for {', '.join(dict.fromkeys(missing))}" if missing else None
