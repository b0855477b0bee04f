"""Constructed examinations for rule tests: only the fields a rule reads, everything else plausible."""

from __future__ import annotations

from typing import Any

from doctor.results import (
    Baseline,
    CheckupResult,
    Environment,
    Examination,
    Expected,
    LayerStat,
    Measurement,
    ModelFacts,
    TextInfo,
)

FACTS = ModelFacts(
    id="toy", architecture="LlamaForCausalLM", model_type="llama", params=1000, layers=8, hidden=64, heads=8,
    kv_heads=4, vocab=512, dtype="float32",
)


def text(corpus: str = "tinystories-valid") -> TextInfo:
    return TextInfo(corpus=corpus, tokens=4096, windows=8, seq_len=512, seed=0)


def checkup(
    id: str, modification: dict[str, Any], *, metrics: dict[str, float] | None = None, **fields: Any
) -> CheckupResult:
    measured = {k: Measurement(value=v) for k, v in (metrics or {}).items()}
    return CheckupResult(id=id, modification=modification, metrics=measured, **fields)


def quant(id: str, bits: int, ppl_ratio: float, method: str = "rtn", group_size: int | None = 128, **kw) -> CheckupResult:
    mod = {"kind": "quantize", "method": method, "bits": bits, "group_size": group_size}
    metrics = {"ppl_ratio": ppl_ratio, **kw.pop("metrics", {})}
    return checkup(id, mod, metrics=metrics, **kw)


def prune(id: str, sparsity: float, ppl_ratio: float, structure: str = "unstructured", method: str = "wanda", **kw):
    mod = {"kind": "prune", "method": method, "structure": structure, "sparsity": sparsity}
    if "calibration" in kw and isinstance(kw["calibration"], str):
        kw["calibration"] = text(kw["calibration"])
    return checkup(id, mod, metrics={"ppl_ratio": ppl_ratio, **kw.pop("metrics", {})}, **kw)


def expected(metric: str, point: float, lower: float, upper: float, outside: str, in_domain: bool = True) -> Expected:
    return Expected(metric=metric, point=point, lower=lower, upper=upper, outside=outside, in_domain=in_domain)


def layers(values: list[float], stat: str = "local_error") -> list[LayerStat]:
    return [LayerStat(layer=i, name=f"layers.{i}", rel_error=v, extra={stat: v}) for i, v in enumerate(values)]


def exam(checkups: list[CheckupResult], baseline_layers: list[LayerStat] | None = None) -> Examination:
    env = Environment(tool_version="0", python="3", platform="test", libraries={}, device="cpu", backend="torch")
    baseline = Baseline(metrics={"ppl": Measurement(value=10.0)}, text=text(), layers=baseline_layers or [])
    return Examination(patient=FACTS, suite={"name": "test"}, environment=env, started="now", baseline=baseline,
                       checkups=checkups)  # fmt: skip
