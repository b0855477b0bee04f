"""Featurization of (model facts, modification) for the degradation model.

The target is modelled on the scale t = log(delta + EPS), delta = log(PPL_mod / PPL_dense), because published
post-training quantization loss falls roughly exponentially in bits and grows with training tokens per
parameter (Kumar et al., "Scaling Laws for Precision", arXiv 2411.04330; Ouyang et al., "Low-Bit Quantization
Favors Undertrained LLMs", arXiv 2411.17691). A linear model on t is then multiplicative in delta: a slope
in bits is an exp(-bits) law, the hinge below 3 bits lets the low-bit cliff steepen further, and sparsity with
its square per kind lets the collapse past ~60% unstructured sparsity bend upward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

ENCODING_VERSION = 1
EPS = 0.01  # delta floor of the transform: below ~1% perplexity change, sources' rounding noise dominates

KINDS = ("quantization", "unstructured", "semi-structured", "structured", "layer-removal")
QUANT_CLASSES = ("rtn", "gptq", "awq", "learned", "gguf", "codebook")
PRUNE_CLASSES = ("magnitude", "wanda", "sparsegpt")
STRUCT_CLASSES = ("magnitude", "wanda", "gradient", "slicegpt", "random")

_METHOD_CLASS = {
    "rtn": "rtn", "bnb-fp4": "rtn", "bnb-nf4": "rtn", "bnb-nf4-double-quant": "rtn", "hqq": "rtn",
    "smoothquant": "rtn", "gptq": "gptq", "optq": "gptq", "awq": "awq", "omniquant": "learned",
    "autoround": "learned", "aqlm-1x16": "codebook", "aqlm-2x8": "codebook", "quip": "codebook",
    "quip-sharp": "codebook", "magnitude": "magnitude", "wanda": "wanda", "owl-wanda": "wanda", "ria": "wanda",
    "wanda+dsnot": "wanda", "sparsegpt": "sparsegpt", "owl-sparsegpt": "sparsegpt", "admm": "sparsegpt",
    "sparsegpt+dsnot": "sparsegpt", "llm-pruner-l2": "magnitude", "llm-pruner-random": "random",
    "llm-pruner-taylor": "gradient", "llm-pruner-element1": "gradient", "llm-pruner-element2": "gradient",
    "llm-pruner-vector": "gradient", "llm-pruner-channel": "gradient", "wanda-sp": "wanda", "flap": "wanda",
    "slicegpt": "slicegpt", "sleb": "layer", "shortgpt": "layer",
}

FEATURES = (
    "const", "lp", "tpp_unknown", "k_unstructured", "k_semi", "k_structured", "k_layer",
    "q_bits", "q_cliff", "q_per_channel", "q_log_group", "q_gptq", "q_awq", "q_learned", "q_gguf", "q_codebook",
    "q_lp", "q_ltpp", "u_s", "u_s2", "u_wanda", "u_sparsegpt", "s_s", "s_s2", "s_wanda",
    "s_gradient", "s_slicegpt", "s_random", "l_s", "d_c4", "d_ptb", "lctx",
)


@dataclass(frozen=True)
class Case:
    """One model under one modification, in the training table's vocabulary."""

    params_b: float
    kind: str
    method: str  # a class from QUANT_CLASSES / PRUNE_CLASSES / STRUCT_CLASSES, or 'layer'
    family: str | None = None
    training_tokens: float | None = None
    bits: float | None = None
    group_size: float | None = None
    sparsity: float | None = None
    dataset: str = "wikitext2"
    ctx: float | None = None
    layers: int | None = None
    hidden: int | None = None


def method_class(method: str, kind: str) -> str:
    """Literature or tool method name -> the class the model has a coefficient for."""
    name = method.lower()
    if name.startswith("gguf-"):
        return "gguf"
    if kind == "layer-removal":
        return "layer"
    return _METHOD_CLASS.get(name, "rtn" if kind == "quantization" else "magnitude")


def dataset_of(name: str | None) -> str:
    text = (name or "").lower()
    for key in ("c4", "ptb"):
        if key in text:
            return key
    return "wikitext2"


def _f(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def case_from_row(row: dict) -> Case:
    """A training-table row (literature.csv layout plus ctx/act_bits/training_tokens) as a Case."""
    kind = str(row["kind"])
    group = _f(row.get("group_size"))
    method = method_class(str(row["method"]), kind)
    if method == "gguf" and group is None:
        group = 32.0  # k-quant sub-blocks are 16-32 weights; blank here does not mean per-channel
    if method == "codebook" and group is None:
        group = 8.0  # vector codebooks quantize 8 weights jointly
    return Case(
        params_b=float(row["params_b"]), kind=kind, method=method, family=row.get("model_family"),
        training_tokens=_f(row.get("training_tokens")), bits=_f(row.get("bits")), group_size=group,
        sparsity=_f(row.get("sparsity")),
        dataset=dataset_of(str(row.get("metric"))), ctx=_f(row.get("ctx")),
        layers=int(row["n_layers"]) if _f(row.get("n_layers")) else None,
        hidden=int(row["hidden_size"]) if _f(row.get("hidden_size")) else None,
    )


def log_params(case: Case) -> float:
    return math.log10(case.params_b / 7.0)


def log_tpp(case: Case) -> float | None:
    if not case.training_tokens:
        return None
    return math.log10(case.training_tokens / (case.params_b * 1e9) / 200.0)


def encode(case: Case) -> np.ndarray:
    """The design row for one case, in FEATURES order."""
    kind = case.kind
    q = kind == "quantization"
    u = kind in ("unstructured", "semi-structured")
    s = kind == "structured"
    lay = kind == "layer-removal"
    lp = log_params(case)
    ltpp = log_tpp(case)
    bits = case.bits if case.bits is not None else 16.0
    per_channel = q and case.group_size is None
    log_group = math.log2(case.group_size) - 7.0 if q and case.group_size else 0.0
    sp = case.sparsity or 0.0
    ctx = math.log2(case.ctx / 2048.0) if case.ctx else 0.0
    m = case.method
    v = {
        "const": 1.0, "lp": lp, "tpp_unknown": float(q and ltpp is None),
        "k_unstructured": float(kind == "unstructured"), "k_semi": float(kind == "semi-structured"),
        "k_structured": float(s), "k_layer": float(lay),
        "q_bits": q * (bits - 4.0), "q_cliff": q * max(0.0, 3.0 - bits), "q_per_channel": float(per_channel),
        "q_log_group": log_group, "q_gptq": q * (m == "gptq"), "q_awq": q * (m == "awq"),
        "q_learned": q * (m == "learned"), "q_gguf": q * (m == "gguf"), "q_codebook": q * (m == "codebook"),
        "q_lp": q * lp, "q_ltpp": q * (ltpp or 0.0),
        "u_s": u * (sp - 0.5), "u_s2": u * (sp - 0.5) ** 2, "u_wanda": u * (m == "wanda"),
        "u_sparsegpt": u * (m == "sparsegpt"), "s_s": s * (sp - 0.2), "s_s2": s * (sp - 0.2) ** 2,
        "s_wanda": s * (m == "wanda"), "s_gradient": s * (m == "gradient"), "s_slicegpt": s * (m == "slicegpt"),
        "s_random": s * (m == "random"), "l_s": lay * (sp - 0.25),
        "d_c4": float(case.dataset == "c4"), "d_ptb": float(case.dataset == "ptb"), "lctx": ctx,
    }
    return np.array([float(v[name]) for name in FEATURES])


def design(cases: list[Case]) -> np.ndarray:
    return np.vstack([encode(c) for c in cases])


def to_scale(delta: np.ndarray | float) -> np.ndarray | float:
    """delta (log PPL ratio) -> the modelling scale; deltas below -EPS/2 are sampling noise and clipped."""
    return np.log(np.maximum(delta, -EPS / 2) + EPS)


def from_scale(t: np.ndarray | float) -> np.ndarray | float:
    return np.exp(t) - EPS


# Where the published table says something: ranges of the quantities the model extrapolates in.
def domain_axes(case: Case) -> dict[str, float]:
    axes = {"log10_params_b": math.log10(case.params_b)}
    if case.kind == "quantization" and case.bits is not None:
        axes["bits"] = case.bits
    if case.kind != "quantization" and case.sparsity is not None:
        axes[f"sparsity:{case.kind}"] = case.sparsity
    tpp = log_tpp(case)
    if tpp is not None:
        axes["log10_tokens_per_param"] = tpp + math.log10(200.0)
    return axes


def clamp_to_domain(case: Case, domain: dict[str, list[float]]) -> Case:
    """The case with model size and tokens/param pulled into the training range (extrapolating a linear
    size trend over decades is not evidence; the widened interval carries the uncertainty instead)."""
    lo, hi = domain.get("log10_params_b", [-math.inf, math.inf])
    params = 10 ** min(max(math.log10(case.params_b), lo), hi)
    tokens = case.training_tokens
    if tokens and "log10_tokens_per_param" in domain:
        tlo, thi = domain["log10_tokens_per_param"]
        tpp = min(max(math.log10(tokens / (case.params_b * 1e9)), tlo), thi)
        tokens = 10**tpp * params * 1e9
    return replace(case, params_b=params, training_tokens=tokens)
