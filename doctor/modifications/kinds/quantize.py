"""`kind: quantize`: weight-only quantization (RTN, GPTQ, AWQ) of the linear layers in the decoder blocks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from doctor.modifications.registry import Compression, ModificationMethod, Unsupported, pick
from doctor.spec.base import CalibrationSpec, Spec, TargetSpec

# Each method and the function that applies it (`apply(spec, ctx) -> Applied`): the spec's `method` values.
METHODS = {
    "rtn": "doctor.modifications.quantize:apply_rtn",
    "gptq": "doctor.modifications.gptq:apply_gptq",
    "awq": "doctor.modifications.awq:apply_awq",
}


class QuantizeSpec(Spec):
    """Weight-only quantization of the linear layers in the decoder blocks."""

    kind: Literal["quantize"] = "quantize"
    method: Literal[tuple(METHODS)] = "rtn"
    bits: int = Field(ge=2, le=8)
    group_size: int | None = Field(None, ge=8, description="None: one scale per output channel")
    symmetric: bool = False
    act_order: bool = Field(False, description="GPTQ: quantize columns in order of decreasing Hessian diagonal")
    true_sequential: bool = Field(
        False,
        description="GPTQ: calibrate q/k/v, o, gate/up, down in turn on already-quantized outputs (upstream "
        "--true-sequential); default: every linear of a block from the same inputs, as upstream",
    )
    group_scales: Literal["reference", "updated"] = Field(
        "reference",
        description="GPTQ with groups: a group's scale and zero from the weights as upstream reads them (before "
        "the current block's updates) or from the fully updated weights ('updated')",
    )
    static_groups: bool = Field(
        False, description="GPTQ with groups: find every group's scale up front on contiguous columns (upstream "
        "--static-groups), so act_order keeps groups contiguous in storage order",
    )
    damp: float = Field(0.01, gt=0, lt=1, description="GPTQ/SparseGPT: dampening as a fraction of mean diag(H)")
    block_size: int = Field(128, ge=1, description="GPTQ/SparseGPT: columns per lazy-update block")
    grid: int = Field(20, ge=2, le=200, description="AWQ: scale exponents i / grid, i = 0..grid-1, are tried")
    auto_clip: bool = Field(True, description="AWQ: search a clipping bound per row and group (llm-awq auto_clip)")
    gqa_scales: Literal["skip", "tied"] = Field(
        "skip",
        description="AWQ with grouped-query attention: leave o_proj unscaled as llm-awq ('skip'), or scale it with "
        "one scale per value channel shared by the query heads reading it ('tied')",
    )
    ssm_params: Literal["keep", "quantize"] = Field(
        "keep",
        description="state-space mixers (Mamba): keep dt_proj, A_log, D and conv1d in full precision, or round "
        "their weights to nearest at these bits and groups (RTN for every method: dt_proj is used as a bare "
        "matrix that no calibration hook sees)",
    )
    search_tokens: int | None = Field(
        None, ge=1,
        description="AWQ: measure the scale search's loss on the first calibration windows holding this many tokens "
        "(whole windows) instead of all of them, as upstream; the activation means and the clip search still use "
        "every token. A cheaper, non-reference option",
    )
    targets: TargetSpec | None = None
    calibration: CalibrationSpec | None = None

    @model_validator(mode="after")
    def _check_static_groups(self) -> QuantizeSpec:
        if self.static_groups and (self.method != "gptq" or self.group_size is None):
            raise ValueError("static_groups applies only to method 'gptq' with a group_size")
        awq_options = {"auto_clip", "gqa_scales", "grid", "search_tokens"} & self.model_fields_set
        if awq_options and self.method != "awq":
            raise ValueError(f"{', '.join(sorted(awq_options))} applies only to method 'awq'")
        if self.true_sequential and self.method != "gptq":
            raise ValueError("true_sequential applies only to method 'gptq'")
        if self.group_scales != "reference" and (self.method != "gptq" or self.group_size is None or self.static_groups):
            raise ValueError("group_scales applies only to method 'gptq' with a group_size and no static_groups")
        return self


def summary(mod: dict[str, Any]) -> str:
    parts = ["quantize", str(mod.get("method", "rtn")), f"{mod.get('bits')}-bit"]
    parts.append(f"g{mod['group_size']}" if mod.get("group_size") else "per-channel")
    if mod.get("symmetric"):
        parts.append("sym")
    if mod.get("act_order"):
        parts.append("act-order")
    if mod.get("static_groups"):
        parts.append("static-groups")
    if mod.get("true_sequential"):
        parts.append("true-sequential")
    if mod.get("group_scales") == "updated":
        parts.append("updated-group-scales")
    if mod.get("ssm_params") == "quantize":
        parts.append("+ssm-params-rtn")
    return " ".join(parts)


def level(mod: dict[str, Any], realized: dict[str, Any]) -> float | None:
    """1 - bits/16: 16-bit weights are the uncompressed reference."""
    return 1.0 - mod["bits"] / 16.0 if isinstance(mod.get("bits"), (int, float)) else None


def case_fields(mod: dict, realized: dict, layers: int) -> dict:
    bits = pick(realized, mod, "bits")
    if bits is None:
        raise Unsupported("quantize without bits")
    return {"kind": "quantization", "method": str(mod.get("method", "rtn")), "bits": float(bits),
            "group_size": pick(realized, mod, "group_size")}


METHOD = ModificationMethod(
    kind="quantize",
    spec=QuantizeSpec,
    apply="doctor.modifications.quantize:apply",
    summary=summary,
    compression=Compression("bits", level),
    predictor=case_fields,
    examples=(
        {"kind": "quantize", "method": "rtn", "bits": 3, "group_size": 32},
        {"kind": "quantize", "method": "gptq", "bits": 3, "group_size": 32, "act_order": True},
        {"kind": "quantize", "method": "awq", "bits": 3, "group_size": 32},
    ),
    rank=10,
    description=QuantizeSpec.__doc__,
)
