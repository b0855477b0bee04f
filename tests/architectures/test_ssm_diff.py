"""Do SSMs hemorrhage differently? A transformer and a Mamba model examined with one suite land side by side in
`doctor diff`: every shared checkup's metrics are paired, and what the SSM cannot do shows as a verdict change."""

from __future__ import annotations

from arch_zoo import tiny_model

from doctor.report.diff import diff_examinations
from doctor.report.diff_report import render_diff_reports
from doctor.runner import Options, examine
from doctor.spec.checkup import Suite
from tests.conftest import as_patient

CHECKUPS = [
    {"id": "rtn-4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32}},
    {"id": "wanda-50", "modification": {"kind": "prune", "method": "wanda", "sparsity": 0.5}},
    {"id": "heads-25", "modification": {"kind": "prune", "structure": "heads", "sparsity": 0.25}},
]


def test_a_transformer_and_an_ssm_side_by_side(tmp_path):
    suite = Suite.model_validate({
        "name": "ssm-vs-transformer", "eval": {"corpus": "auto", "max_windows": 2, "seq_len": 32, "bootstrap": 0},
        "calibration": {"corpus": "auto", "samples": 2, "seq_len": 32},
        "checkups": [{**c, "metrics": ["perplexity", "kl", "size"]} for c in CHECKUPS],
    })
    exams = [examine(as_patient(tiny_model(arch), arch), suite, Options(out_dir=tmp_path / arch, use_predictor=False))
             for arch in ("llama", "mamba")]
    d = diff_examinations(*exams)
    paired = {(m.checkup, m.metric) for m in d.metrics}
    for checkup in ("rtn-4", "wanda-50"):
        assert {(checkup, "ppl_ratio"), (checkup, "kl_mean"), (checkup, "coverage")} <= paired
    assert [(cid, b) for cid, _a, b in d.verdicts] == [("heads-25", "error")]
    text = render_diff_reports(d, *exams, every=True)["diff.md"]
    assert "llama → mamba" in text and "coverage" in text
