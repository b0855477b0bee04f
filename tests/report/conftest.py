"""A realistic examination record built from doctor.results: sweeps, a failed checkup, findings of all severities."""

from __future__ import annotations

import math

import pytest

from doctor.results import (
    Baseline,
    CheckupResult,
    Environment,
    Examination,
    Expected,
    Finding,
    LayerStat,
    Measurement,
    ModelFacts,
    TextInfo,
    ThresholdVerdict,
)

BASE_PPL = 7.83
EVAL = TextInfo(corpus="tinystories-valid", sha256="ab" * 32, tokens=40960, windows=80, seq_len=512, seed=0)
CALIB = TextInfo(corpus="tinystories-calib", sha256="cd" * 32, tokens=16384, windows=32, seq_len=512, seed=0)
# Extra damage per method relative to RTN: calibrated methods hurt less.
METHOD_FACTOR = {"rtn": 1.0, "gptq": 0.55, "awq": 0.7}


def _measure(value: float, spread: float = 0.01) -> Measurement:
    return Measurement(value=value, lower=value * (1 - spread), upper=value * (1 + spread), n=80)


def _checkup(cid: str, mod: dict, ppl_ratio: float, expect_max: float, severity: str, minute: int,
             predicted: float | None = None, realized: dict | None = None) -> CheckupResult:
    kl = max(0.0, math.log(ppl_ratio)) * 1.3 + 1e-5
    metrics = {
        "ppl": _measure(BASE_PPL * ppl_ratio),
        "ppl_ratio": _measure(ppl_ratio, 0.004),
        "nll_delta": Measurement(value=math.log(ppl_ratio)),
        "kl_mean": _measure(kl, 0.05),
        "kl_median": Measurement(value=kl * 0.6),
        "kl_p99": Measurement(value=kl * 6),
        "top1_agreement": _measure(max(0.2, 1 - kl), 0.002),
        "size_mb": Measurement(value=1.0 * (realized or {}).get("effective_bits", 16) / 16),
    }
    for key, value in (realized or {}).items():
        if key in ("effective_bits", "sparsity", "params_ratio"):
            metrics[key] = Measurement(value=float(value))
    expected = {}
    if predicted is not None:
        lower, upper = predicted * 0.97, predicted * 1.04
        outside = "above" if ppl_ratio > upper else "below" if ppl_ratio < lower else "inside"
        expected["ppl_ratio"] = Expected(metric="ppl_ratio", point=predicted, lower=lower, upper=upper,
                                         residual=math.log(ppl_ratio / predicted),
                                         z=math.log(ppl_ratio / predicted) / 0.02, outside=outside,
                                         predictor="demo-ols-v1")
    passed = ppl_ratio <= expect_max
    layers = [LayerStat(layer=i, name=f"model.layers.{i}", rel_error=(ppl_ratio - 1) * (0.5 + 0.3 * i) + 1e-4,
                        seconds=0.01) for i in range(5)]
    return CheckupResult(
        id=cid, description=f"{cid} on all decoder linears", modification=mod, severity=severity,
        tags=[mod["kind"]], status="ok", verdict="pass" if passed else "fail", realized=realized or {},
        metrics=metrics, expected=expected, layers=layers, text=EVAL,
        calibration=CALIB if mod.get("method") not in ("rtn", "magnitude") else None,
        thresholds=[ThresholdVerdict(key="ppl_ratio", max=expect_max, value=ppl_ratio, passed=passed),
                    ThresholdVerdict(key="top1_agreement", min=0.5, value=metrics["top1_agreement"].value,
                                     passed=metrics["top1_agreement"].value >= 0.5)],
        started=f"2025-01-01T10:{minute:02d}:00+00:00", duration_s=3.5 + minute,
    )


def build_examination(model_id: str = "stories260k", rule_title: str = "Outlier channels break RTN at 3 bits",
                      suite_path: str = "checkups/standard.yaml", extra_findings: bool = True) -> Examination:
    checkups: list[CheckupResult] = []
    minute = 0
    for method, factor in METHOD_FACTOR.items():
        for bits in (8, 4, 3, 2):
            ratio = 1 + factor * 0.004 * 4 ** (8 - bits) / 16 * (1 if bits > 2 else 3)
            mod = {"kind": "quantize", "method": method, "bits": bits, "group_size": 32, "symmetric": False}
            eff = bits + 16 / 32
            checkups.append(_checkup(f"{method}-w{bits}g32", mod, ratio, 1.10 if bits >= 4 else 1.5, "high",
                                     minute, predicted=ratio * 0.98,
                                     realized={"bits": bits, "group_size": 32, "effective_bits": eff}))
            minute += 1
    for method in ("magnitude", "wanda"):
        for sparsity in (0.2, 0.5, 0.7):
            ratio = 1 + (0.8 if method == "magnitude" else 0.5) * sparsity ** 2.5
            mod = {"kind": "prune", "method": method, "structure": "unstructured", "sparsity": sparsity}
            checkups.append(_checkup(f"{method}-{int(sparsity * 100)}", mod, ratio, 1.3, "medium", minute,
                                     predicted=ratio * 1.01,
                                     realized={"sparsity": sparsity, "target_sparsity": sparsity,
                                               "sparsity_per_layer": [sparsity] * 5}))
            minute += 1
    checkups.append(CheckupResult(
        id="sparsegpt-2-4", description="SparseGPT 2:4",
        modification={"kind": "prune", "method": "sparsegpt", "structure": "nm", "n": 2, "m": 4},
        severity="high", status="error", verdict="error",
        error="ModificationError: 172 input features are not divisible by m=4 <in model.layers.0.mlp>",
        started="2025-01-01T10:40:00+00:00", duration_s=0.2, text=EVAL,
    ))
    findings = [
        Finding(rule="QZ01", title=rule_title, severity="high", cause="quantization",
                explanation="RTN at 3 bits is well above the predicted band while GPTQ is inside it.",
                recommendation="Use GPTQ or AWQ below 4 bits.", reference="Frantar et al. 2022, GPTQ",
                checkups=["rtn-w3g32", "rtn-w2g32"], evidence={"ppl_ratio": 1.19, "z": 4.2, "upper": 1.12},
                source="rules/QZ01.yaml"),
        Finding(rule="PR02", title="Magnitude pruning degrades faster than Wanda", severity="medium",
                cause="pruning", explanation="At 70% sparsity magnitude pruning loses more than Wanda.",
                checkups=["magnitude-70", "wanda-70"], evidence={"ratio": [1.33, 1.2]}, source="rules/PR02.yaml"),
    ]
    if extra_findings:
        findings += [
            Finding(rule="INF1", title="8-bit is lossless", severity="info", cause="quantization",
                    explanation="All 8-bit checkups are within noise.", checkups=["rtn-w8g32"]),
            Finding(rule="ERR9", title="A checkup could not run", severity="critical", cause="error",
                    explanation="sparsegpt-2-4 raised.", checkups=["sparsegpt-2-4"]),
            Finding(rule="LO01", title="Slight KL tail", severity="low", cause="quantization",
                    explanation="KL p99 is 6x the mean.", checkups=["gptq-w4g32"]),
        ]
    return Examination(
        patient=ModelFacts(id=model_id, architecture="LlamaForCausalLM", model_type="llama", params=292_480,
                           layers=5, hidden=64, intermediate=172, heads=8, kv_heads=4, vocab=512, context=512,
                           dtype="float32", tied_embeddings=True, weights_sha256="ef" * 32),
        suite={"name": "standard", "checkups": [c.id for c in checkups]}, suite_path=suite_path,
        suite_sha256="12" * 32, rule_files={"rules/QZ01.yaml": "34" * 32, "rules/PR02.yaml": "56" * 32},
        rule_docs={"QZ01": "RTN falls off a cliff below 4 bits where GPTQ does not.",
                   "PR02": "Magnitude pruning loses more than Wanda at the same sparsity."},
        predictor={"name": "demo-ols-v1", "sha256": "78" * 32},
        environment=Environment(tool_version="0.1.0", python="3.11.2", platform="Linux-x86_64",
                                libraries={"torch": "2.13.0", "transformers": "5.24.0"}, device="cpu",
                                backend="torch", seeds={"eval": 0, "calibration": 0}),
        started="2025-01-01T10:00:00+00:00", ended="2025-01-01T10:41:00+00:00", duration_s=2460.0,
        baseline=Baseline(metrics={"ppl": _measure(BASE_PPL)}, text=EVAL, duration_s=4.2,
                          health={"nan_logits": 0, "mean_entropy": 2.1}),
        checkups=checkups, findings=findings, fail_on="high", verdict="findings", exit_code=1,
    )


@pytest.fixture
def exam() -> Examination:
    return build_examination()


@pytest.fixture(scope="session")
def rendered() -> dict[str, str]:
    """The sample examination's report files, rendered once (plots are the slow part)."""
    from doctor.report import render_reports

    return render_reports(build_examination())
