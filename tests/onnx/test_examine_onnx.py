"""A whole examination under `--backend onnx`: the torch baseline, export parity, ORT-quantized checkups, the report."""

from __future__ import annotations

import math

import pytest

from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.examination.runner import Options, examine
from doctor.metrics.evaluation import baseline_pass
from doctor.report import render_reports
from doctor.spec.checkup import Suite

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def onnx_exam(demo_patient, demo_export, onnx_out, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-exam")
    (out / "onnx-cache").symlink_to(onnx_out / "onnx-cache", target_is_directory=True)  # reuse the session's export
    metrics = ["perplexity", "kl", "size", "latency"]
    suite = Suite.model_validate({
        "name": "deploy", "eval": {"corpus": "auto", "max_windows": 2, "bootstrap": 50},
        "checkups": [
            {"id": "ort-export", "modification": {"kind": "onnx"}, "metrics": metrics},
            {"id": "ort-int8", "modification": {"kind": "onnx", "quantize": "dynamic-int8"}, "metrics": metrics},
            {"id": "ort-int4", "modification": {"kind": "onnx", "quantize": "int4-weight", "block_size": 32},
             "metrics": metrics},
        ],
    })
    return examine(demo_patient, suite, Options(out_dir=out, backend="onnx", device="cpu", use_predictor=False))


def test_the_baseline_is_torch_whatever_the_backend(demo_patient, onnx_exam):
    assert onnx_exam.environment.backend == "onnx"
    assert onnx_exam.baseline.health["backend"].startswith("torch/")
    assert onnx_exam.baseline.health["checkup_backend"] == "onnx"
    text = resolve_corpus("auto", demo=True, purpose="eval")
    ids = eval_windows(tokenize(text, demo_patient.tokenizer, 1024), 512, 2)
    torch_pass, _ = baseline_pass(TorchBackend(demo_patient.model), ids, demo_patient.facts.vocab)
    torch_ppl = math.exp(float(torch_pass.nll.mean()))
    assert onnx_exam.baseline.metrics["ppl"].value == pytest.approx(torch_ppl, rel=1e-9)


def test_plain_export_reports_parity_against_torch_not_zero(onnx_exam):
    """KL of the exported graph against the torch baseline: float rounding, neither 0 nor damage."""
    c = next(c for c in onnx_exam.checkups if c.id == "ort-export")
    assert c.status == "ok", c.error
    assert 0 < c.metrics["kl_mean"].value < 1e-4
    assert c.metrics["top1_agreement"].value > 0.99
    assert c.metrics["ppl_ratio"].value == pytest.approx(1.0, abs=1e-3)
    ratios = {k: c.metrics[k].value for k in ("latency_ratio", "throughput_ratio")}
    assert all(0 < v < 100 for v in ratios.values())
    m = c.metrics
    assert m["latency_ratio"].value == pytest.approx(m["latency_ms"].value / m["latency_torch_ms"].value)
    assert m["throughput_ratio"].value == pytest.approx(m["throughput_tok_s"].value / m["throughput_torch_tok_s"].value)


def test_ort_checkups_record_provider_quality_size_and_latency(onnx_exam):
    for c in onnx_exam.checkups:
        assert c.status == "ok", c.error
        assert (c.backend, c.provider, c.realized["provider"]) == ("onnx", CPU, CPU)
        assert {"ppl_ratio", "kl_mean", "top1_agreement", "size_mb", "latency_ms"} <= set(c.metrics)
        if c.id != "ort-export":
            assert 1.0 < c.metrics["ppl_ratio"].value < 1.3 and c.metrics["kl_mean"].value > 0
            assert c.metrics["size_mb"].value < c.realized["fp32_file_size_mb"]
        latency = c.metrics["latency_ms"]
        assert latency.value > 0 and latency.n == 5 and f"onnx/{CPU}" in latency.note
    md = render_reports(onnx_exam)["report.md"]
    assert f"onnx ({CPU})" in md and "latency (ms)" in md and "size (MB)" in md and "latency / torch" in md
