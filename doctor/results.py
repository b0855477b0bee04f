"""The examination record: the only input to rules and reports, written as results.json.

Everything a report shows is here, so `doctor report results.json` re-renders without the model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Record(BaseModel):
    # NaN/inf survive a JSON round trip as strings (a null would not load back as a float)
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class ModelFacts(Record):
    """What the predictor and the report need to know about the patient."""

    id: str
    architecture: str
    model_type: str
    params: int
    layers: int
    hidden: int
    intermediate: int | None = None
    heads: int
    kv_heads: int
    vocab: int
    context: int | None = None
    dtype: str
    tied_embeddings: bool = False
    family: str | None = None
    training_tokens: float | None = None
    family_evidence: str | None = None  # where the family was read (GGUF metadata, config.json, name, tokenizer)
    weights_sha256: str | None = None
    source_format: str = "huggingface"  # "gguf": the baseline is a dequantized checkpoint of that file
    source_file: dict[str, Any] | None = None  # the GGUF's own facts (name, types and their share, size, hash)
    prior_bits: int | None = None  # already quantized: the grid most weights lie on (None: not found)
    prior_group_size: int | None = None  # inputs per group of that grid; -1: one scale per output row
    history: dict[str, Any] | None = None  # the prior-quantization scan: layouts, layers, levels per group
    revision: str | None = None  # the hub commit of the loaded snapshot


class TextInfo(Record):
    """Which text a number was measured on."""

    corpus: str
    path: str | None = None
    sha256: str | None = None
    tokens: int
    windows: int
    seq_len: int
    seed: int
    ids_sha256: str | None = None


class Measurement(Record):
    value: float
    lower: float | None = None
    upper: float | None = None
    n: int | None = None
    note: str | None = None


class ThresholdVerdict(Record):
    key: str
    min: float | None = None
    max: float | None = None
    value: float | None = None
    passed: bool


class Expected(Record):
    """The predictor's expectation for one metric, and where the observation falls."""

    metric: str
    point: float
    lower: float
    upper: float
    level: float = 0.9
    prior_point: float | None = None
    prior_lower: float | None = None
    prior_upper: float | None = None
    residual: float | None = None
    z: float | None = None
    outside: Literal["above", "below", "inside"] | None = None
    in_domain: bool = True
    warning: str | None = None
    predictor: str = ""
    history: Literal["at-or-above", "below"] | None = None  # the new grid against the patient's existing one
    fresh_point: float | None = None  # what an unquantized model would be expected to lose (before history)
    fresh_lower: float | None = None
    fresh_upper: float | None = None


class LayerStat(Record):
    """Per decoder layer facts from a modification or a measurement."""

    layer: int
    name: str = ""
    rel_error: float | None = None
    sparsity: float | None = None
    seconds: float | None = None
    extra: dict[str, float] = Field(default_factory=dict)


class CheckupResult(Record):
    id: str
    description: str = ""
    modification: dict[str, Any]
    severity: str = "medium"
    tags: list[str] = Field(default_factory=list)
    status: Literal["ok", "error"] = "ok"
    verdict: Literal["pass", "fail", "error"] = "pass"
    error: str | None = None
    realized: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Measurement] = Field(default_factory=dict)
    thresholds: list[ThresholdVerdict] = Field(default_factory=list)
    expected: dict[str, Expected] = Field(default_factory=dict)
    layers: list[LayerStat] = Field(default_factory=list)
    text: TextInfo | None = None
    calibration: TextInfo | None = None
    backend: str = "torch"
    provider: str | None = None
    started: str = ""
    duration_s: float = 0.0

    def value(self, key: str) -> float | None:
        m = self.metrics.get(key)
        return None if m is None else m.value


class Baseline(Record):
    metrics: dict[str, Measurement]
    text: TextInfo
    layers: list[LayerStat] = Field(default_factory=list)
    health: dict[str, Any] = Field(default_factory=dict)
    precision: dict[str, Any] | None = None  # the --dtype auto decision and its first-window check
    duration_s: float = 0.0


class Finding(Record):
    rule: str
    title: str
    severity: str
    cause: str
    explanation: str
    recommendation: str = ""
    reference: str = ""
    checkups: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
    source: str = ""


class Environment(Record):
    tool_version: str
    python: str
    platform: str
    libraries: dict[str, str]
    device: str
    backend: str
    seeds: dict[str, int] = Field(default_factory=dict)
    command: str | None = None  # the command line that ran the examination
    git_commit: str | None = None  # of the tool's source checkout, when it runs from one


class Examination(Record):
    schema_version: int = SCHEMA_VERSION
    patient: ModelFacts
    suite: dict[str, Any]
    suite_path: str | None = None
    suite_sha256: str | None = None
    rule_files: dict[str, str] = Field(default_factory=dict)
    rule_docs: dict[str, str] = Field(default_factory=dict)  # rule id -> what it detects, for fired rules
    predictor: dict[str, Any] = Field(default_factory=dict)
    environment: Environment
    started: str
    ended: str = ""
    duration_s: float = 0.0
    baseline: Baseline
    checkups: list[CheckupResult] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    fail_on: str = "high"
    verdict: Literal["healthy", "findings", "failed"] = "healthy"
    exit_code: int = 0
