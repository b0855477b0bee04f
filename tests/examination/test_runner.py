"""The examination loop: exact restore, failures recorded, results journaled and resumable."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch

from doctor.errors import DoctorError
from doctor.examination import checkup as checkup_run
from doctor.examination.runner import Options, examine
from doctor.modifications import registry
from doctor.modifications.base import Applied
from doctor.spec.checkup import Suite
from tests.conftest import assert_bit_identical, state_snapshot

SUITE = {
    "name": "t",
    "eval": {"corpus": "tinystories-valid", "max_windows": 3, "bootstrap": 50},
    "calibration": {"corpus": "tinystories-calib", "samples": 4},
    "checkups": [
        {"id": "rtn4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32},
         "expect": {"ppl_ratio": {"max": 100}}},
        {"id": "mag", "modification": {"kind": "prune", "sparsity": 0.5}, "expect": {"top1_agreement": {"min": 0.9999}},
         "severity": "high"},
        {"id": "nm", "modification": {"kind": "compose", "steps": [
            {"kind": "prune", "structure": "nm", "n": 2, "m": 4}, {"kind": "quantize", "bits": 8}]}},
    ],
}


def _options(tmp_path, **kw):
    return Options(out_dir=tmp_path, use_predictor=False, **kw)


def test_examination_restores_every_parameter_bit_for_bit(tiny_llama, tmp_path):
    before = state_snapshot(tiny_llama.model)
    exam = examine(tiny_llama, Suite.model_validate(SUITE), _options(tmp_path))
    assert_bit_identical(tiny_llama.model, before)
    assert [c.status for c in exam.checkups] == ["ok", "ok", "ok"]
    assert exam.checkups[2].realized["sparsity"] > 0.49
    # thresholds: rtn4 passes, mag fails (severity high) -> a finding and exit 1
    assert [c.verdict for c in exam.checkups] == ["pass", "fail", "pass"]
    assert exam.verdict == "findings" and exam.exit_code == 1
    assert any(f.rule == "expect" and f.checkups == ["mag"] for f in exam.findings)


def _nan_quantize(spec, ctx):
    weight = ctx.patient.model.model.layers[0].mlp.down_proj.weight
    ctx.undo.save_tensor(weight)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    return Applied()


def test_nan_producing_modification_is_a_recorded_failure(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.methods(), "quantize", replace(registry.method("quantize"), apply=_nan_quantize))
    before = state_snapshot(tiny_llama.model)
    exam = examine(tiny_llama, Suite.model_validate(SUITE), _options(tmp_path))
    assert exam.checkups[0].status == "error" and "NaN" in exam.checkups[0].error
    assert exam.checkups[1].status == "ok"  # the run went on
    assert exam.verdict == "failed" and exam.exit_code == 1
    assert_bit_identical(tiny_llama.model, before)


def test_interrupted_examination_resumes_without_redoing_work(tiny_llama, tmp_path, monkeypatch):
    suite = Suite.model_validate(SUITE)
    real = checkup_run.run_checkup
    calls = []

    def interrupt_second(session, checkup):
        calls.append(checkup.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(session, checkup)

    monkeypatch.setattr("doctor.examination.runner.run_checkup", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        examine(tiny_llama, suite, _options(tmp_path))
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["id"] == "rtn4"

    calls.clear()
    monkeypatch.setattr("doctor.examination.runner.run_checkup", lambda s, c: calls.append(c.id) or real(s, c))
    exam = examine(tiny_llama, suite, _options(tmp_path, resume=True))
    assert calls == ["mag", "nm"]
    assert [c.id for c in exam.checkups] == ["rtn4", "mag", "nm"]


def test_resume_refuses_a_different_examination(tiny_llama, tmp_path):
    examine(tiny_llama, Suite.model_validate(SUITE), _options(tmp_path))
    other = dict(SUITE, eval=dict(SUITE["eval"], max_windows=2))
    with pytest.raises(DoctorError, match="cannot resume"):
        examine(tiny_llama, Suite.model_validate(other), _options(tmp_path, resume=True))


def test_gpt2_style_model_is_examined(tiny_gpt2, tmp_path):
    before = state_snapshot(tiny_gpt2.model)
    exam = examine(tiny_gpt2, Suite.model_validate(SUITE), _options(tmp_path))
    assert all(c.status == "ok" for c in exam.checkups), [c.error for c in exam.checkups]
    assert_bit_identical(tiny_gpt2.model, before)


def test_every_checkup_records_its_text_token_count_and_seed(tiny_llama, tmp_path):
    exam = examine(tiny_llama, Suite.model_validate(SUITE), _options(tmp_path))
    base = exam.baseline.text
    assert (base.corpus, base.windows, base.seed) == ("tinystories-valid", 3, 0)
    assert base.tokens == base.windows * base.seq_len and base.ids_sha256
    for c in exam.checkups:
        assert c.text == base
        assert all(c.metrics[k].n == base.windows for k in ("ppl_ratio", "kl_mean", "top1_agreement"))
        assert c.metrics["kl_median"].n == base.windows * (base.seq_len - 1)  # over predicted tokens


def test_progress_counts_the_windows_of_every_pass(tiny_llama, tmp_path):
    messages = []
    examine(tiny_llama, Suite.model_validate(SUITE), _options(tmp_path), progress=messages.append)
    assert "baseline: 3/3 windows" in messages
    for cid in ("rtn4", "mag", "nm"):
        assert f"{cid}: measuring 3/3 windows" in messages


def _onnx_suite() -> Suite:
    return Suite.model_validate(dict(SUITE, checkups=[
        {"id": "ort", "modification": {"kind": "onnx", "quantize": "dynamic-int8"}}, SUITE["checkups"][0]]))


def test_missing_onnxruntime_is_a_recorded_failed_checkup(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    exam = examine(tiny_llama, _onnx_suite(), _options(tmp_path))
    assert exam.checkups[0].status == "error" and "onnxruntime" in exam.checkups[0].error
    assert "\n" not in exam.checkups[0].error
    assert exam.checkups[1].status == "ok" and exam.verdict == "failed"


def test_onnx_export_failure_is_a_recorded_failed_checkup(tiny_llama, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed\ntraceback")

    monkeypatch.setattr(torch.onnx, "export", broken)
    exam = examine(tiny_llama, _onnx_suite(), _options(tmp_path))
    assert exam.checkups[0].status == "error" and "exporter crashed" in exam.checkups[0].error
    assert exam.checkups[1].status == "ok" and exam.verdict == "failed"


def test_layer_probe_rides_on_the_passes_and_attention_entropy_is_opt_in(tiny_llama, tmp_path):
    """layer_error comes from hooks on the evaluation passes; only `attention` adds (priced) eager passes."""
    from doctor.metrics import layerwise

    calls = []
    real = layerwise.LayerProbe.entropies
    suite = Suite.model_validate({
        "name": "probe", "eval": {"corpus": "tinystories-valid", "max_windows": 3, "bootstrap": 0},
        "checkups": [
            {"id": "rtn3", "modification": {"kind": "quantize", "bits": 3, "group_size": 32},
             "metrics": ["perplexity", "layer_error"]},
            {"id": "rtn3-attn", "modification": {"kind": "quantize", "bits": 3, "group_size": 32},
             "metrics": ["perplexity", "attention"]},
        ],
    })

    def counted(self, model):
        calls.append(len(layerwise.decoder_layers(model)))
        return real(self, model)

    layerwise.LayerProbe.entropies = counted
    try:
        exam = examine(tiny_llama, suite, _options(tmp_path))
    finally:
        layerwise.LayerProbe.entropies = real
    plain, attn = exam.checkups
    assert len(calls) == 2  # the baseline's and the attention checkup's eager passes; none for layer_error
    assert exam.baseline.health["layer_probe_passes"] >= 0 and exam.baseline.health["attention_probe_passes"] > 0
    assert all("attention_entropy" in s.extra for s in exam.baseline.layers)
    assert plain.metrics["layer_error_max"].value > 0 and "attention_probe_passes" not in plain.metrics
    assert not any("attention_entropy" in s.extra for s in plain.layers)
    assert attn.metrics["attention_probe_passes"].value > 0 and "attention_entropy_shift" in attn.metrics
    assert plain.metrics["layer_error_max"].value == pytest.approx(attn.metrics["layer_error_max"].value)


def test_no_eager_pass_without_the_attention_group(tiny_llama, tmp_path):
    suite = Suite.model_validate({
        "name": "probe", "eval": {"corpus": "tinystories-valid", "max_windows": 2, "bootstrap": 0},
        "checkups": [{"id": "rtn3", "modification": {"kind": "quantize", "bits": 3, "group_size": 32},
                      "metrics": ["layer_error"]}],  # no evaluation group: the probe runs its own windows
    })
    exam = examine(tiny_llama, suite, _options(tmp_path))
    (c,) = exam.checkups
    assert "attention_probe_passes" not in exam.baseline.health
    assert c.metrics["layer_error_max"].value > 0 and "ppl" not in c.metrics
