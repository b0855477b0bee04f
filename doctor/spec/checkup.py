"""Checkup and suite specs, as validated from YAML."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from doctor.metrics.registry import groups, is_metric_key, metric_keys
from doctor.spec.modification import CalibrationSpec, Modification, Spec

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    """Higher is more severe; an unknown severity (a results file from elsewhere) ranks above 'critical', so it
    is never buried in a report nor let through a release gate."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)

# Metric groups a checkup can ask for, and the observation keys each produces (from the metric registry).
METRIC_GROUPS: dict[str, tuple[str, ...]] = {name: tuple(k.key for k in g.keys) for name, g in groups().items()}
METRIC_KEYS: frozenset[str] = frozenset(metric_keys())


def unknown_metric_message(key: str) -> str:
    """'unknown metric' with the closest known keys, for suites and rules alike."""
    import difflib

    close = difflib.get_close_matches(key, sorted(METRIC_KEYS), n=2)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(sorted(METRIC_KEYS))}"
    return f"unknown metric '{key}'; {hint} (task metrics are acc:<task>, acc_norm:<task>, acc_drop:<task>, exact_match:<task>)"


class EvalSpec(Spec):
    """The evaluation text and windowing shared by the baseline and every checkup."""

    corpus: str = Field("auto", description="bundled corpus name, a text file path, or 'auto' (model default)")
    seq_len: int | None = Field(None, ge=8, description="window length; default 2048 (the literature's), capped by the model's context")
    max_windows: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(
        None, ge=8, description="at most this many tokens in whole windows (with max_windows: the smaller); the "
        "same budget whatever the model's window length"
    )
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples over windows for intervals")
    kl_mode: Literal["auto", "hidden", "mass", "exact", "full"] = Field(
        "auto", description="what the baseline keeps for KL: 'hidden' (final hidden states and a copy of the "
        "output head; logits recomputed, exact), 'full' float32 log-probs, 'exact' (all, uint16 on disk), 'mass' "
        "(per token the likeliest up to kl_target_mass); 'auto': hidden when at least 50x smaller than float32 "
        "logits and the head is reproduced, else full when the vocabulary is small, else mass"
    )
    kl_hidden_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="hidden mode: how the final hidden states are kept; 'auto': the output head's dtype "
        "(lossless); float16 halves them for float32 models (measured within 0.03% of exact KL on SmolLM2)"
    )
    kl_target_mass: float = Field(0.999, gt=0, le=1, description="mass mode: baseline probability kept per token")
    kl_bytes_per_token: int = Field(4096, ge=24, description="mass mode: storage budget per token")
    kl_top_k: int | None = Field(
        None, ge=1, description="a fixed number of log-probs per token (mass mode with target 1); prefer kl_mode"
    )
    batch_size: int = Field(4, ge=1)
    seed: int = 0


    def window_cap(self, seq_len: int) -> int | None:
        """How many windows of `seq_len` tokens to evaluate at most (None: the whole text)."""
        caps = [c for c in (self.max_windows, self.max_tokens and max(1, self.max_tokens // seq_len)) if c]
        return min(caps) if caps else None


class Threshold(Spec):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"a threshold must be a finite number, not {value}")
        return value

    def passes(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Checkup(Spec):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str = ""
    modification: Modification
    metrics: list[str] = Field(default_factory=lambda: ["perplexity", "kl"])
    tasks: list[str] = Field(default_factory=list, description="task names or JSONL paths for the 'tasks' metric")
    expect: dict[str, Threshold] = Field(default_factory=dict)
    severity: Severity = "medium"
    tags: list[str] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in METRIC_GROUPS:
                raise ValueError(f"unknown metric '{name}'; known: {', '.join(METRIC_GROUPS)}")
        return value

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        from doctor.tasks.format import TaskFileError, resolve_task

        for ref in value:
            try:
                resolve_task(ref)
            except TaskFileError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("expect")
    @classmethod
    def _known_keys(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        for key in value:
            if not is_metric_key(key):
                raise ValueError(f"unknown metric key '{key}' in expect; known: {', '.join(sorted(METRIC_KEYS))}")
        return value


class Suite(Spec):
    name: str
    description: str = ""
    eval: EvalSpec = Field(default_factory=EvalSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    checkups: list[Checkup] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        for checkup in self.checkups:
            if checkup.id in seen:
                raise ValueError(f"duplicate checkup id '{checkup.id}'")
            seen.add(checkup.id)
        return self
