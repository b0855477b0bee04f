"""Modification specs: a Pydantic discriminated union on `kind`.

Specs are data only; each kind's implementation lives in `doctor.modifications` and is looked up by `kind`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class QuantizeSpec(Spec):
    """Weight-only quantization of the linear layers in the decoder blocks."""

    kind: Literal["quantize"] = "quantize"
    method: Literal["rtn", "gptq", "awq"] = "rtn"
    bits: int = Field(ge=2, le=8)
    group_size: int | None = Field(None, ge=8, description="None: one scale per output channel")
    symmetric: bool = False
    act_order: bool = Field(False, description="GPTQ: quantize columns in order of decreasing Hessian diagonal")
    static_groups: bool = Field(
        False, description="GPTQ with groups: find every group's scale up front on contiguous columns (upstream "
        "--static-groups), so act_order keeps groups contiguous in storage order",
    )
    damp: float = Field(0.01, gt=0, lt=1, description="GPTQ/SparseGPT: dampening as a fraction of mean diag(H)")
    block_size: int = Field(128, ge=1, description="GPTQ/SparseGPT: columns per lazy-update block")
    grid: int = Field(20, ge=2, le=200, description="AWQ: points in the scale-exponent grid search")
    targets: TargetSpec | None = None
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_static_groups(self) -> QuantizeSpec:
        if self.static_groups and (self.method != "gptq" or self.group_size is None):
            raise ValueError("static_groups applies only to method 'gptq' with a group_size")
        return self


class PruneSpec(Spec):
    """Weight pruning: unstructured, N:M, or structured (attention heads / MLP channels)."""

    kind: Literal["prune"] = "prune"
    method: Literal["magnitude", "wanda", "sparsegpt"] = "magnitude"
    structure: Literal["unstructured", "nm", "heads", "channels"] = "unstructured"
    sparsity: float | None = Field(None, gt=0, lt=1)
    n: int | None = Field(None, ge=1, description="N:M: zeros per group of m")
    m: int | None = Field(None, ge=2)
    damp: float = Field(0.01, gt=0, lt=1)
    block_size: int = Field(128, ge=1)
    true_sequential: bool = Field(
        False,
        description="wanda/sparsegpt: calibrate q/k/v, o, gate/up, down in turn on already-pruned outputs; "
        "default: every linear of a block from the same inputs, as both reference implementations",
    )
    head_unit: Literal["kv_group", "query"] = Field(
        "kv_group",
        description="heads: remove whole KV groups (a KV head with its query heads) or query heads within groups",
    )
    targets: TargetSpec | None = Field(None, description="unstructured and N:M only")
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_pattern(self) -> PruneSpec:
        if self.structure == "nm":
            if self.n is None or self.m is None:
                raise ValueError("structure 'nm' needs both n and m (e.g. n: 2, m: 4)")
            if self.n >= self.m:
                raise ValueError(f"n ({self.n}) must be smaller than m ({self.m})")
            if self.sparsity is not None and abs(self.sparsity - self.n / self.m) > 1e-9:
                raise ValueError(f"an {self.n}:{self.m} pattern fixes sparsity at {self.n / self.m}")
        else:
            if self.n is not None or self.m is not None:
                raise ValueError(f"n and m apply only to structure 'nm', not '{self.structure}'")
            if self.sparsity is None:
                raise ValueError(f"structure '{self.structure}' needs a sparsity in (0, 1)")
        if self.structure in ("heads", "channels") and self.method == "sparsegpt":
            raise ValueError("structured pruning ranks by 'magnitude' or 'wanda' importance, not 'sparsegpt'")
        if self.true_sequential and (self.method == "magnitude" or self.structure in ("heads", "channels")):
            raise ValueError("true_sequential applies only to wanda and sparsegpt unstructured or N:M pruning")
        if self.targets is not None and self.structure in ("heads", "channels"):
            raise ValueError("targets applies only to unstructured and N:M pruning")
        if self.head_unit != "kv_group" and self.structure != "heads":
            raise ValueError(f"head_unit applies only to structure 'heads', not '{self.structure}'")
        return self

    @property
    def target_sparsity(self) -> float:
        return self.n / self.m if self.structure == "nm" else float(self.sparsity)


class RemoveLayersSpec(Spec):
    """Whole decoder blocks removed, ranked by Block Influence (ShortGPT) or by position."""

    kind: Literal["remove_layers"] = "remove_layers"
    count: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, lt=1)
    by: Literal["block_influence", "last", "first", "indices"] = "block_influence"
    indices: list[int] | None = None
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_amount(self) -> RemoveLayersSpec:
        if self.by == "indices":
            if not self.indices:
                raise ValueError("by 'indices' needs a non-empty list 'indices'")
        elif (self.count is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'count' or 'fraction'")
        return self


class ExpandLayersSpec(Spec):
    """Copies of decoder blocks inserted (LLaMA-Pro style identity init, or a naive copy)."""

    kind: Literal["expand_layers"] = "expand_layers"
    count: int = Field(1, ge=1)
    init: Literal["identity", "copy"] = "identity"
    placement: Literal["interleave", "end"] = "interleave"


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


class OnnxSpec(Spec):
    """Export to ONNX and evaluate under ONNX Runtime, optionally with ORT's own quantization."""

    kind: Literal["onnx"] = "onnx"
    quantize: Literal["none", "dynamic-int8", "int4-weight"] = "none"
    block_size: int = Field(32, ge=16, description="int4-weight: weights per quantization block (power of 2)")
    opset: int = Field(18, ge=14)

    @model_validator(mode="after")
    def _check_block(self) -> OnnxSpec:
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        return self


class ComposeSpec(Spec):
    """Several modifications applied in order (e.g. Wanda 50% then GPTQ 4-bit, or 4-bit plus sampling)."""

    kind: Literal["compose"] = "compose"
    steps: list[Modification] = Field(min_length=1)


Modification = Annotated[
    QuantizeSpec | PruneSpec | RemoveLayersSpec | ExpandLayersSpec | DecodeSpec | OnnxSpec | ComposeSpec,
    Field(discriminator="kind"),
]

ComposeSpec.model_rebuild()

MODIFICATION_KINDS = ("quantize", "prune", "remove_layers", "expand_layers", "decode", "onnx", "compose")


def flatten(spec: Spec) -> list[Spec]:
    """The leaf modifications of a spec, in application order."""
    if isinstance(spec, ComposeSpec):
        return [leaf for step in spec.steps for leaf in flatten(step)]
    return [spec]
