"""Number and text formatting shared by the report views; templates only print what these return."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from typing import Any

# How many decimals each metric deserves: ratios near 1 need 4, perplexities 3, sizes 2.
_DECIMALS: dict[str, int] = {
    "ppl": 3,
    "ppl_ratio": 4,
    "nll_delta": 4,
    "top1_agreement": 4,
    "kl_coverage": 4,
    "kl_coverage_min": 4,
    "delta_p_mean": 4,
    "delta_p_rms": 4,
    "delta_p_p01": 4,
    "delta_p_p99": 4,
    "params_ratio": 4,
    "sparsity": 4,
    "coverage": 4,
    "effective_bits": 3,
    "size_mb": 2,
    "latency_ms": 2,
    "latency_torch_ms": 2,
    "latency_ratio": 3,
    "throughput_tok_s": 1,
    "throughput_torch_tok_s": 1,
    "throughput_ratio": 3,
    "attention_entropy_shift": 4,
    "repetition_rate": 4,
    "distinct_1": 4,
    "distinct_2": 4,
    "mean_length": 1,
    "generated_ppl": 3,
}

_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_LINK_BRACKET = re.compile(r"\](?=[(\[:])")

METRIC_LABELS: dict[str, str] = {
    "ppl": "perplexity",
    "ppl_ratio": "ppl ratio",
    "nll_delta": "NLL delta",
    "kl_mean": "KL mean",
    "kl_median": "KL median",
    "kl_max": "KL max",
    "kl_p999": "KL p99.9",
    "kl_p99": "KL p99",
    "kl_p95": "KL p95",
    "kl_p90": "KL p90",
    "top1_agreement": "top-1 agreement (same top p)",
    "delta_p_mean": "Δp mean",
    "delta_p_rms": "Δp RMS",
    "delta_p_p01": "Δp 1st percentile",
    "delta_p_p99": "Δp 99th percentile",
    "kl_coverage": "KL coverage (baseline mass)",
    "kl_coverage_min": "KL coverage, lowest token",
    "layer_error_max": "layer error max",
    "layer_error_mean": "layer error mean",
    "effective_bits": "effective bits",
    "size_mb": "size (MB)",
    "params": "params",
    "params_ratio": "params ratio",
    "sparsity": "sparsity",
    "coverage": "coverage",
    "latency_ms": "latency (ms)",
    "layer_probe_passes": "layer probe cost (passes)",
    "latency_torch_ms": "torch latency (ms)",
    "latency_ratio": "latency / torch",
    "throughput_tok_s": "throughput (tokens/s)",
    "throughput_torch_tok_s": "torch throughput (tokens/s)",
    "throughput_ratio": "throughput / torch",
}


def metric_label(key: str) -> str:
    return METRIC_LABELS.get(key, key)


def number(value: Any, key: str = "") -> str:
    """A metric value as text, with precision chosen by metric; '–' for missing, 'NaN'/'inf' spelled out."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if key == "params":
        return f"{value:,.0f}"
    if key in _DECIMALS:
        return f"{value:.{_DECIMALS[key]}f}"
    return _general(value)


def _general(value: float) -> str:
    """Four significant digits, switching to scientific notation for tiny or huge magnitudes."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


def signed(value: float | None, key: str = "") -> str:
    if value is None:
        return "–"
    text = number(float(value), key)
    return text if text.startswith("-") or text in ("NaN", "inf") else "+" + text


def interval(lower: float | None, upper: float | None, key: str = "") -> str:
    if lower is None or upper is None:
        return ""
    return f"[{number(float(lower), key)}, {number(float(upper), key)}]"


def bound(minimum: float | None, maximum: float | None, key: str = "") -> str:
    """A threshold as text: '≤ 1.10', '≥ 0.90' or '0.90 … 1.10'."""
    if minimum is not None and maximum is not None:
        return f"{number(float(minimum), key)} … {number(float(maximum), key)}"
    if maximum is not None:
        return f"≤ {number(float(maximum), key)}"
    if minimum is not None:
        return f"≥ {number(float(minimum), key)}"
    return ""


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def end_time(started: str, seconds: float) -> str:
    """The ISO end time of something that started at `started` and took `seconds` ('–' if unparseable)."""
    try:
        start = datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return "–"
    return (start + timedelta(seconds=seconds)).isoformat(timespec="seconds")


def value_text(value: Any) -> str:
    """Any evidence or realized value as compact text (nested values as sorted JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_rounded(value), sort_keys=True, ensure_ascii=False)
    return number(value)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(_general(value)) if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def md_escape(value: Any) -> str:
    """Text that Markdown (GitHub flavour) shows literally inside a table cell: no HTML, no pipes, one line."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\")
    # Only what could start an HTML tag, comment or entity is escaped, so "ppl <= 1.1" stays readable.
    text = _ENTITY.sub("&amp;", text)
    text = _TAG_START.sub("&lt;", text)
    text = text.replace("|", "\\|").replace("`", "\\`").replace("*", "\\*")
    # Underscores inside words never emphasize (GFM), so only word-edge ones are escaped; same for link brackets.
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)
    text = _LINK_BRACKET.sub(r"\\]", text)
    return " ".join(text.split())


def modification_summary(mod: dict[str, Any]) -> str:
    """One line naming what a checkup did, e.g. 'quantize gptq 4-bit g128' or 'prune wanda 2:4'."""
    kind = str(mod.get("kind", "?"))
    if kind == "compose":
        return " → ".join(modification_summary(step) for step in mod.get("steps", []) if isinstance(step, dict))
    summarize = _SUMMARIES.get(kind)
    return summarize(mod) if summarize else " ".join([kind, *_extra_fields(mod, ("kind",))])


def _quantize(mod: dict[str, Any]) -> str:
    parts = ["quantize", str(mod.get("method", "rtn")), f"{mod.get('bits')}-bit"]
    parts.append(f"g{mod['group_size']}" if mod.get("group_size") else "per-channel")
    if mod.get("symmetric"):
        parts.append("sym")
    if mod.get("act_order"):
        parts.append("act-order")
    if mod.get("static_groups"):
        parts.append("static-groups")
    return " ".join(parts)


def _prune(mod: dict[str, Any]) -> str:
    parts = ["prune", str(mod.get("method", "magnitude"))]
    structure = mod.get("structure", "unstructured")
    if structure == "nm":
        parts.append(f"{mod.get('n')}:{mod.get('m')}")
    else:
        sparsity = mod.get("sparsity")
        parts.append(percent(float(sparsity)) if isinstance(sparsity, (int, float)) else "?")
        parts.append(str(structure))
    return " ".join(parts)


def _remove_layers(mod: dict[str, Any]) -> str:
    by = mod.get("by", "block_influence")
    if by == "indices":
        return f"remove layers {mod.get('indices')}"
    amount = mod.get("count") if mod.get("count") is not None else percent(mod.get("fraction"))
    return f"remove {amount} layers by {by}"


def _expand_layers(mod: dict[str, Any]) -> str:
    return f"expand +{mod.get('count', 1)} layers ({mod.get('init', 'identity')}, {mod.get('placement', 'interleave')})"


_DECODE_FIELDS = {"beam": ("num_beams",), "sample": ("temperature", "top_k", "top_p"), "contrastive": ("top_k", "penalty_alpha")}


def _decode(mod: dict[str, Any]) -> str:
    strategy = str(mod.get("strategy", "greedy"))
    fields = _DECODE_FIELDS.get(strategy, ())
    return " ".join(["decode", strategy, *(f"{k}={value_text(mod[k])}" for k in fields if mod.get(k) is not None)])


def _onnx(mod: dict[str, Any]) -> str:
    quant = mod.get("quantize", "none")
    text = "onnx runtime" if quant == "none" else f"onnx runtime {quant}"
    return text + (f" b{mod['block_size']}" if quant == "int4-weight" and mod.get("block_size") else "")


def _extra_fields(mod: dict[str, Any], skip: tuple[str, ...]) -> list[str]:
    return [f"{k}={value_text(v)}" for k, v in sorted(mod.items()) if k not in skip and v is not None]


_SUMMARIES = {
    "quantize": _quantize,
    "prune": _prune,
    "remove_layers": _remove_layers,
    "expand_layers": _expand_layers,
    "decode": _decode,
    "onnx": _onnx,
}
