"""The base of every spec, and the calibration choice that several modification kinds share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationSpec(Spec):
    """Random windows from a calibration corpus, deterministic for a seed."""

    corpus: str = Field("auto", description="bundled corpus name, a text file path, or 'auto' (model default)")
    samples: int = Field(32, ge=1, le=4096)
    seq_len: int | None = Field(None, ge=8, description="tokens per sample; default: the eval window")
    seed: int = 0


class TargetSpec(Spec):
    """Narrows a weight modification to some module types and/or decoder layers (default: every target)."""

    modules: list[Literal["attention", "mlp", "experts", "shared_expert", "ssm"]] | None = Field(
        None, min_length=1, description="module types in scope; default: all"
    )
    layers: list[int] | None = Field(
        None, min_length=1, description="decoder layer indices in scope (negative counts from the end); default: all"
    )
