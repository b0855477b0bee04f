"""The base of every spec, and the calibration choice that several modification kinds share."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LITERATURE_SAMPLES = 128
LITERATURE_MAX_SEQ_LEN = 2048


class CalibrationSpec(Spec):
    """Random windows from a calibration corpus, deterministic for a seed.

    `preset: fast` (default): `samples` windows of `seq_len` tokens (default: the evaluation window) drawn with
    torch's generator. `preset: literature`: what the GPTQ, SparseGPT and Wanda papers and code use, 128 windows
    of the model's context capped at 2048 tokens, drawn as their `get_loaders` does (Python's `random.seed(seed)`,
    then `randint(0, tokens - seq_len - 1)` per window), so published numbers can be reproduced.
    AWQ draws its own shape unless `samples`/`seq_len` are set: llm-awq's blocks of 512 tokens, 8 of them under
    'fast' and 128 under 'literature' (its search costs about 27 layer passes per calibration token).
    """

    corpus: str = Field("auto", description="bundled corpus name, a text file path, or 'auto' (model default)")
    preset: Literal["fast", "literature"] = Field(
        "fast", description="'literature': 128 windows of the model's context (at most 2048), the reference sampler"
    )
    samples: int = Field(32, ge=1, le=4096, description="windows to draw; default 32 (AWQ: 8)")
    seq_len: int | None = Field(None, ge=8, description="tokens per sample; default: the eval window (AWQ: 512)")
    seed: int = 0

    @model_validator(mode="after")
    def _check_preset(self) -> CalibrationSpec:
        fixed = {"samples", "seq_len"} & self.model_fields_set
        if self.preset == "literature" and fixed:
            raise ValueError(f"preset 'literature' fixes samples and seq_len; remove {', '.join(sorted(fixed))}")
        return self


class TargetSpec(Spec):
    """Narrows a weight modification to some module types and/or decoder layers (default: every target)."""

    modules: list[Literal["attention", "mlp", "experts", "shared_expert", "ssm"]] | None = Field(
        None, min_length=1, description="module types in scope; default: all"
    )
    layers: list[int] | None = Field(
        None, min_length=1, description="decoder layer indices in scope (negative counts from the end); default: all"
    )
