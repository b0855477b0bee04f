"""Featurization of (model facts, modification) for the degradation model.

The target delta = log(PPL_mod / PPL_dense) is bounded: a model can at worst guess uniformly over its
vocabulary, so the log ratio saturates at cap = log(vocab / dense PPL). It is modelled on the scale
t = log(delta + EPS) - log(1 - delta / cap + TOP): at small delta this is log(delta + EPS) (published post-training
quantization loss falls roughly exponentially in bits and grows with training tokens per parameter: Kumar et
al., "Scaling Laws for Precision", arXiv 2411.04330; Ouyang et al., "Low-Bit Quantization Favors Undertrained
LLMs", arXiv 2411.17691), and near the cap it runs off to +infinity, so no prediction or interval bound can pass
uniform guessing. A linear model on t: a slope in bits is an exp(-bits) law, hinges below 3 and 2 bits let the
low-bit cliff steepen, per method-class cliff slopes let a method that is fine at 4 bits collapse at 2 (as does
per-channel scaling below 4 bits, and less so a larger model), and sparsity with its square per kind lets the
collapse past ~60% unstructured sparsity bend upward. Whether a calibrated method was calibrated on the
evaluation corpus is one more feature (`cal_match`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

ENCODING_VERSION = 3
EPS = 0.01  # delta floor of the transform: below ~1% perplexity change, sources' rounding noise dominates
TOP = 0.01  # how close to the cap (as a fraction of it) the transform still resolves
DEFAULT_VOCAB = 32000  # smallest vocabulary among the table's families: the most conservative cap

KINDS = ("quantization", "unstructured", "semi-structured", "structured", "layer-removal")
LOW_BITS = 3.5  # below: the cliff, where published results scatter by orders of magnitude more
VARIANCE_GROUPS = ("quantization", "quantization:low-bit", *KINDS[1:])
QUANT_CLASSES = ("rtn", "gptq", "awq", "learned", "gguf", "codebook", "binary")
PRUNE_CLASSES = ("magnitude", "wanda", "sparsegpt")
STRUCT_CLASSES = ("magnitude", "wanda", "gradient", "slicegpt", "random", "flap")

_METHOD_CLASS = {
    "rtn": "rtn", "bnb-fp4": "rtn", "bnb-nf4": "rtn", "bnb-nf4-double-quant": "rtn", "hqq": "rtn",
    "smoothquant": "rtn", "gptq": "gptq", "optq": "gptq", "awq": "awq", "omniquant": "learned",
    "autoround": "learned", "efficientqat": "learned", "aqlm-1x16": "codebook", "aqlm-2x8": "codebook",
    "quip": "gptq",  # original QuIP: LDLQ rounding (equivalent to OPTQ, arXiv 2307.13304) after incoherence
    "quip-sharp": "codebook", "billm": "binary", "pb-llm": "binary", "onebit": "binary", "arb-llm": "binary",
    "magnitude": "magnitude", "wanda": "wanda", "owl-wanda": "wanda", "ria": "wanda",
    "wanda+dsnot": "wanda", "sparsegpt": "sparsegpt", "owl-sparsegpt": "sparsegpt", "admm": "sparsegpt",
    "sparsegpt+dsnot": "sparsegpt", "llm-pruner-l2": "magnitude", "llm-pruner-random": "random",
    "llm-pruner-taylor": "gradient", "llm-pruner-element1": "gradient", "llm-pruner-element2": "gradient",
    "llm-pruner-vector": "gradient", "llm-pruner-channel": "gradient", "wanda-sp": "wanda", "flap": "flap",
    "slicegpt": "slicegpt", "sleb": "layer", "shortgpt": "layer",
}
CALIBRATED = ("gptq", "awq", "learned", "codebook", "wanda", "sparsegpt", "gradient", "slicegpt", "flap")
_CORPORA = (("wikitext", "wikitext2"), ("c4", "c4"), ("ptb", "ptb"), ("pile", "pile"), ("redpajama", "redpajama"),
            ("bookcorpus", "bookcorpus"), ("tinystories", "tinystories"))

FEATURES = (
    "const", "lp", "tpp_unknown", "k_unstructured", "k_semi", "k_structured", "k_layer",
    "q_bits", "q_cliff", "q_sub2", "q_per_channel", "q_log_group", "q_gptq", "q_awq", "q_learned", "q_gguf",
    "q_codebook", "q_binary", "q_gptq_cliff", "q_awq_cliff", "q_learned_cliff", "q_gguf_cliff",
    "q_codebook_cliff", "q_pc_cliff", "q_lp_cliff", "q_pc_lp", "q_lp", "q_ltpp", "cal_match",
    "u_s", "u_s2", "u_wanda", "u_sparsegpt", "s_s", "s_s2", "s_wanda",
    "s_gradient", "s_slicegpt", "s_random", "s_flap", "l_s", "d_c4", "d_ptb", "lctx",
)

# method-class effects (levels and cliff slopes; the reference classes rtn / magnitude have none), by block
CLASS_EFFECTS = {
    **{f"q_{cls}": "quantization" for cls in QUANT_CLASSES[1:]},
    **{f"q_{cls}_cliff": "quantization:cliff" for cls in QUANT_CLASSES[1:] if f"q_{cls}_cliff" in FEATURES},
    "u_wanda": "unstructured", "u_sparsegpt": "unstructured",
    **{f"s_{cls}": "structured" for cls in STRUCT_CLASSES[1:]},
}


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
    method_name: str | None = None  # the name as written (literature or tool), before mapping to a class
    calibration: str | None = None  # calibration corpus (corpus_of), None when unknown
    cap: float | None = None  # log(vocab / dense PPL): the uniform-guessing bound of delta


def method_class(method: str, kind: str, bits: float | None = None) -> str:
    """Literature or tool method name -> the class the model has a coefficient for (see `mapping_note`)."""
    name = method.lower()
    if name.startswith("gguf-"):
        return "gguf"
    if kind == "layer-removal":
        return "layer"
    if name in _METHOD_CLASS:
        return _METHOD_CLASS[name]
    if kind == "quantization":
        return "binary" if bits is not None and bits < 2 else "rtn"
    return "magnitude"


def mapping_note(method: str, kind: str, bits: float | None = None) -> str:
    """Why an unknown method name got its class."""
    cls = method_class(method, kind, bits)
    if method.lower().startswith("gguf-"):
        why = "its gguf- prefix"
    elif kind == "layer-removal":
        why = "every layer-removal method shares one class"
    elif cls == "binary":
        why = "it quantizes below 2 bits"
    else:
        why = f"the default class for {kind}"
    return f"method '{method}' is not in the training table; predicted as class '{cls}' ({why})"


def corpus_of(name: str | None) -> str | None:
    """A corpus key from a free-text corpus or calibration description; None when it names none."""
    text = (name or "").lower()
    if not text or text == "nan":
        return None
    if "data-free" in text or text == "none":
        return "none"
    return next((key for word, key in _CORPORA if word in text), None)


def dataset_of(name: str | None) -> str:
    text = (name or "").lower()
    for key in ("c4", "ptb"):
        if key in text:
            return key
    return "wikitext2"


def cap_of(vocab: float | None, dense_ppl: float | None) -> float | None:
    """log(vocab / dense PPL): the log ratio of a model that guesses uniformly; None when not positive."""
    if not vocab or not dense_ppl or dense_ppl <= 0 or vocab <= dense_ppl:
        return None
    return math.log(vocab / dense_ppl)


def _f(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def case_from_row(row: dict) -> Case:
    """A training-table row (literature.csv layout plus ctx/training_tokens/vocab/dense_ppl) as a Case."""
    kind = str(row["kind"])
    if kind not in KINDS:
        raise ValueError(f"kind '{kind}' is none of {', '.join(KINDS)}")
    params = _f(row.get("params_b"))
    if params is None or params <= 0:
        raise ValueError("params_b is missing or not positive")
    group = _f(row.get("group_size"))
    bits = _f(row.get("bits"))
    sparsity = _f(row.get("sparsity"))
    if kind == "quantization" and bits is None:
        raise ValueError("a quantization row without bits")
    if kind != "quantization" and sparsity is None:
        raise ValueError(f"a {kind} row without sparsity")
    name = str(row["method"])
    method = method_class(name, kind, bits)
    if method == "gguf" and group is None:
        group = 32.0  # k-quant sub-blocks are 16-32 weights; blank here does not mean per-channel
    if method == "codebook" and group is None:
        group = 8.0  # vector codebooks quantize 8 weights jointly
    dense = _f(row.get("dense_ppl")) or _f(row.get("baseline_value"))
    return Case(
        params_b=params, kind=kind, method=method, family=row.get("model_family"),
        training_tokens=_f(row.get("training_tokens")), bits=bits, group_size=group, sparsity=sparsity,
        dataset=dataset_of(str(row.get("metric"))), ctx=_f(row.get("ctx")),
        layers=int(row["n_layers"]) if _f(row.get("n_layers")) else None,
        hidden=int(row["hidden_size"]) if _f(row.get("hidden_size")) else None,
        method_name=name.lower(), calibration=corpus_of(str(row.get("calibration"))),
        cap=cap_of(_f(row.get("vocab")) or DEFAULT_VOCAB, dense),
    )


def variance_group(case: Case) -> str:
    """The residual-variance group of a case: its kind, with low-bit quantization on its own."""
    if case.kind == "quantization" and case.bits is not None and case.bits < LOW_BITS:
        return "quantization:low-bit"
    return case.kind


def bucket_of(case: Case) -> str:
    """Kind and bucket: bits for quantization (below 2 together), sparsity to 0.1 otherwise."""
    if case.kind == "quantization":
        bits = case.bits or 16.0
        return "quantization bits<2" if bits < 1.95 else f"quantization bits={round(bits)}"
    return f"{case.kind} sparsity={round((case.sparsity or 0.0) * 10) / 10:.1f}"


def log_params(case: Case) -> float:
    return math.log10(case.params_b / 7.0)


def log_tpp(case: Case) -> float | None:
    if not case.training_tokens:
        return None
    return math.log10(case.training_tokens / (case.params_b * 1e9) / 200.0)


def calibration_matches(case: Case) -> bool:
    """A calibrated method whose calibration corpus is the evaluation corpus (in-distribution calibration)."""
    return case.method in CALIBRATED and case.calibration is not None and case.calibration == case.dataset


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
    cliff = q * max(0.0, 3.0 - bits)
    v = {
        "const": 1.0, "lp": lp, "tpp_unknown": float(q and ltpp is None),
        "k_unstructured": float(kind == "unstructured"), "k_semi": float(kind == "semi-structured"),
        "k_structured": float(s), "k_layer": float(lay),
        "q_bits": q * (bits - 4.0), "q_cliff": cliff, "q_sub2": q * max(0.0, 2.0 - bits),
        "q_per_channel": float(per_channel), "q_log_group": log_group,
        "q_pc_cliff": float(per_channel) * max(0.0, 4.0 - bits), "q_lp_cliff": cliff * lp,
        "q_pc_lp": float(per_channel) * lp,
        "q_lp": q * lp, "q_ltpp": q * (ltpp or 0.0), "cal_match": float(calibration_matches(case)),
        "u_s": u * (sp - 0.5), "u_s2": u * (sp - 0.5) ** 2, "u_wanda": u * (m == "wanda"),
        "u_sparsegpt": u * (m == "sparsegpt"), "s_s": s * (sp - 0.2), "s_s2": s * (sp - 0.2) ** 2,
        "s_wanda": s * (m == "wanda"), "s_gradient": s * (m == "gradient"), "s_slicegpt": s * (m == "slicegpt"),
        "s_random": s * (m == "random"), "s_flap": s * (m == "flap"), "l_s": lay * (sp - 0.25),
        "d_c4": float(case.dataset == "c4"), "d_ptb": float(case.dataset == "ptb"), "lctx": ctx,
    }
    for cls in QUANT_CLASSES[1:]:
        v[f"q_{cls}"] = float(q and m == cls)
        if f"q_{cls}_cliff" in FEATURES:
            v[f"q_{cls}_cliff"] = cliff * (m == cls)
    return np.array([float(v[name]) for name in FEATURES])


def design(cases: list[Case]) -> np.ndarray:
    return np.vstack([encode(c) for c in cases])


def cap_or_default(cap: float | None) -> float:
    return cap if cap is not None and cap > 0 else math.log(DEFAULT_VOCAB / 10.0)


def to_scale(delta: np.ndarray | float, cap: np.ndarray | float | None = None) -> np.ndarray | float:
    """delta (log PPL ratio) -> the bounded modelling scale; deltas below -EPS/2 are sampling noise, deltas
    past the cap (worse than uniform guessing) are the cap."""
    c = np.asarray(cap_or_default(cap) if cap is None or np.isscalar(cap) else cap, dtype=float)
    d = np.clip(delta, -EPS / 2, c)
    out = np.log(d + EPS) - np.log(1.0 - d / c + TOP)
    return float(out) if np.ndim(out) == 0 else out


def from_scale(t: np.ndarray | float, cap: np.ndarray | float | None = None) -> np.ndarray | float:
    """Inverse of to_scale: always below the cap."""
    c = np.asarray(cap_or_default(cap) if cap is None or np.isscalar(cap) else cap, dtype=float)
    k = np.exp(np.minimum(t, 700.0))
    out = np.minimum((k * (1.0 + TOP) - EPS) / (1.0 + k / c), c)
    return float(out) if np.ndim(out) == 0 else out


# Where the published table says something, jointly per class: ranges of the quantities the model extrapolates in.
def domain_axes(case: Case) -> dict[str, float]:
    axes = {f"log10_params_b:{case.kind}": math.log10(case.params_b)}
    if case.kind == "quantization" and case.bits is not None:
        axes[f"bits:{case.method}"] = case.bits
    if case.kind != "quantization" and case.sparsity is not None:
        axes[f"sparsity:{case.kind}:{case.method}"] = case.sparsity
    tpp = log_tpp(case)
    if tpp is not None:
        axes["log10_tokens_per_param"] = tpp + math.log10(200.0)
    return axes


def axis_unit(axis: str) -> float:
    """Distance outside the domain is counted in decades of size or tokens, bits, or 0.1 of sparsity."""
    return 0.1 if axis.startswith("sparsity") else 1.0


def clamp_to_domain(case: Case, domain: dict[str, list[float]]) -> Case:
    """The case with model size and tokens/param pulled into the training range (extrapolating a linear
    size trend over decades is not evidence; the widened interval carries the uncertainty instead)."""
    lo, hi = domain.get(f"log10_params_b:{case.kind}", [-math.inf, math.inf])
    params = 10 ** min(max(math.log10(case.params_b), lo), hi)
    tokens = case.training_tokens
    if tokens and "log10_tokens_per_param" in domain:
        tlo, thi = domain["log10_tokens_per_param"]
        tpp = min(max(math.log10(tokens / (case.params_b * 1e9)), tlo), thi)
        tokens = 10**tpp * params * 1e9
    return replace(case, params_b=params, training_tokens=tokens)


def is_params_axis(axis: str) -> bool:
    return re.match(r"log10_params_b(:|$)", axis) is not None
