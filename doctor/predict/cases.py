"""A patient's facts and one checkup's modification (spec dump + realized values) as predictor Cases.

Realized values beat requested ones: measured sparsity over target, the params actually removed over a
nominal structured ratio, the blocks actually removed over a requested fraction. Each kind declares its own
mapping in the modification registry; a kind without one has no expectation (`Unsupported`).
"""

from __future__ import annotations

from typing import Any

from doctor.modifications.kinds.compose import leaves
from doctor.modifications.registry import Unsupported, case_fields
from doctor.predict.features import Case, dataset_of, method_class
from doctor.predict.table import family_fact
from doctor.results import ModelFacts

__all__ = ["Unsupported", "cases_for", "leaf_fields", "patient_basics"]


def patient_basics(facts: ModelFacts) -> dict[str, Any]:
    fact = family_fact(facts.family, facts.id)
    tokens = facts.training_tokens or (fact.training_tokens if fact else None)
    return {
        "params_b": facts.params / 1e9, "family": facts.family or (fact.family if fact else None),
        "training_tokens": tokens, "layers": facts.layers, "hidden": facts.hidden,
    }


def leaf_fields(mod: dict, realized: dict, layers: int) -> dict:
    """The Case fields of one leaf modification, as its kind declares them (`Unsupported`: no expectation)."""
    return case_fields(mod, realized, layers)


def cases_for(facts: ModelFacts, modification: dict, realized: dict | None = None, corpus: str | None = None,
              ctx: float | None = None) -> list[Case]:
    """One Case per leaf modification (a compose gives several; realized values apply to single leaves only)."""
    realized = realized or {}
    flat = leaves(modification)
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
