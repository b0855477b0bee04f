"""`kind: decode`: a decoding strategy for a checkup's generation metrics; touches no weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from doctor.formatting import value_text
from doctor.modifications.registry import NO_COMPRESSION, ModificationMethod
from doctor.spec.base import Spec


class DecodeSpec(Spec):
    """A decoding strategy for generation metrics; touches no weights."""

    kind: Literal["decode"] = "decode"
    strategy: Literal["greedy", "beam", "sample", "contrastive"] = "greedy"
    num_beams: int = Field(4, ge=2, le=32)
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    penalty_alpha: float = Field(0.6, ge=0, le=1)
    seed: int = 0


_DECODE_FIELDS = {"beam": ("num_beams",), "sample": ("temperature", "top_k", "top_p"), "contrastive": ("top_k", "penalty_alpha")}


def summary(mod: dict[str, Any]) -> str:
    strategy = str(mod.get("strategy", "greedy"))
    fields = _DECODE_FIELDS.get(strategy, ())
    return " ".join(["decode", strategy, *(f"{k}={value_text(mod[k])}" for k in fields if mod.get(k) is not None)])


METHOD = ModificationMethod(
    kind="decode",
    spec=DecodeSpec,
    apply="doctor.modifications.decode:apply",
    summary=summary,
    compression=NO_COMPRESSION,
    predictor=None,  # decoding changes no weights: the degradation predictor has nothing to say
    examples=({"kind": "decode", "strategy": "sample", "temperature": 0.8},),
    rank=50,
    description=DecodeSpec.__doc__,
)
