"""A patient's facts and one checkup's modification (spec dump + realized values) as predictor Cases.

Realized values beat requested ones: measured sparsity over target, the params actually removed over a
nominal structured ratio, the blocks actually removed over a requested fraction.
"""

from __future__ import annotations

from typing import Any

from doctor.predict.features import Case, dataset_of, method_class
from doctor.predict.table import family_fact
from doctor.results import ModelFacts


class Unsupported(Exception):
    """This modification has no counterpart in the training table (the reason is the message)."""


def patient_basics(facts: ModelFacts) -> dict[str, Any]:
    fact = family_fact(facts.family, facts.id)
    tokens = facts.training_tokens or (fact.training_tokens if fact else None)
    return {
        "params_b": facts.params / 1e9, "family": facts.family or (fact.family if fact else None),
        "training_tokens": tokens, "layers": facts.layers, "hidden": facts.hidden,
    }


def _pick(realized: dict, modification: dict, *keys: str) -> Any:
    for source in (realized, modification):
        for key in keys:
            value = source.get(key)
            if value is not None:
                return value
    return None


def _quantize(mod: dict, realized: dict) -> dict:
    bits = _pick(realized, mod, "bits")
    if bits is None:
        raise Unsupported("quantize without bits")
    return {"kind": "quantization", "method": str(mod.get("method", "rtn")), "bits": float(bits),
            "group_size": _pick(realized, mod, "group_size")}


def _prune(mod: dict, realized: dict) -> dict:
    structure = mod.get("structure", "unstructured")
    method = str(mod.get("method", "magnitude"))
    if structure in ("heads", "channels"):
        ratio = realized.get("params_ratio")
        sparsity = 1.0 - float(ratio) if ratio is not None else mod.get("sparsity")
        kind = "structured"
    else:
        kind = "semi-structured" if structure == "nm" else "unstructured"
        sparsity = realized.get("sparsity")
        if sparsity is None:
            sparsity = mod["n"] / mod["m"] if structure == "nm" else mod.get("sparsity")
    if sparsity is None:
        raise Unsupported("prune without a sparsity")
    return {"kind": kind, "method": method, "sparsity": float(sparsity)}


def _removed_blocks(mod: dict, realized: dict, layers: int) -> float:
    removed = _pick(realized, {}, "layers_removed", "removed_layers", "removed")
    if isinstance(removed, (list, tuple)):
        return float(len(removed))
    if removed is not None:
        return float(removed)
    if mod.get("by") == "indices" and mod.get("indices"):
        return float(len(mod["indices"]))
    if mod.get("count") is not None:
        return float(mod["count"])
    if mod.get("fraction") is not None:
        return float(round(mod["fraction"] * layers))
    raise Unsupported("remove_layers without a count, fraction or indices")


def leaf_fields(mod: dict, realized: dict, layers: int) -> dict:
    kind = mod.get("kind")
    if kind == "quantize":
        return _quantize(mod, realized)
    if kind == "prune":
        return _prune(mod, realized)
    if kind == "remove_layers":
        if layers <= 0:
            raise Unsupported("remove_layers on a model with no decoder layers")
        return {"kind": "layer-removal", "method": "layer", "sparsity": _removed_blocks(mod, realized, layers) / layers}
    raise Unsupported(f"no published data for modification kind '{kind}'")


def _leaves(modification: dict) -> list[dict]:
    if modification.get("kind") != "compose":
        return [modification]
    return [leaf for step in modification.get("steps") or [] for leaf in _leaves(step)]


def cases_for(facts: ModelFacts, modification: dict, realized: dict | None = None, corpus: str | None = None,
              ctx: float | None = None) -> list[Case]:
    """One Case per leaf modification (a compose gives several; realized values apply to single leaves only)."""
    realized = realized or {}
    flat = _leaves(modification)
    if not flat:
        raise Unsupported("empty compose")
    base = patient_basics(facts)
    out = []
    for leaf in flat:
        fields = leaf_fields(leaf, realized if len(flat) == 1 else {}, facts.layers)
        fields["method_name"] = fields["method"].lower()
        fields["method"] = method_class(fields["method"], fields["kind"], fields.get("bits"))
        out.append(Case(**base, **fields, dataset=dataset_of(corpus), ctx=ctx))
    return out
