"""Expert pruning as a checkup kind and routing shift as a metric group, through a whole examination."""

from __future__ import annotations

from arch_zoo import tiny_model

from doctor.examination.runner import Options, examine
from doctor.spec.checkup import Suite
from tests.conftest import as_patient

CHECKUPS = [
    {"id": "rtn-2", "modification": {"kind": "quantize", "bits": 2, "group_size": 32}},
    {"id": "experts-1", "modification": {"kind": "prune_experts", "count": 1}},
    {"id": "decode", "modification": {"kind": "decode"}},
]


def _examine(arch, tmp_path):
    suite = Suite.model_validate({
        "name": "moe", "eval": {"corpus": "auto", "max_windows": 2, "seq_len": 32, "bootstrap": 0},
        "calibration": {"corpus": "auto", "samples": 4, "seq_len": 32},
        "checkups": [{**c, "metrics": ["perplexity", "routing", "size"]} for c in CHECKUPS],
    })
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exam = examine(as_patient(model, arch), suite, Options(out_dir=tmp_path, use_predictor=False))
    after = model.state_dict()
    assert after.keys() == before.keys() and all((after[k] == before[k]).all() for k in before)
    return {c.id: c for c in exam.checkups}


def test_routing_shift_and_expert_pruning_on_a_moe(tmp_path):
    by_id = _examine("mixtral", tmp_path)
    assert all(c.status == "ok" for c in by_id.values()), {k: c.error for k, c in by_id.items()}
    rtn = by_id["rtn-2"].metrics
    assert 0 < rtn["routing_changed"].value <= 1 and rtn["router_kl"].value > 0
    assert by_id["decode"].metrics["routing_changed"].value == 0.0  # decoding does not touch the router
    experts = by_id["experts-1"]
    assert experts.realized["experts_removed_per_layer"] == 1 and experts.metrics["params_ratio"].value < 1


def test_a_dense_model_reports_no_routing_and_refuses_expert_pruning(tmp_path):
    by_id = _examine("llama", tmp_path)
    assert not any(k in by_id["rtn-2"].metrics for k in ("routing_changed", "router_kl"))
    assert by_id["experts-1"].status == "error"
    assert by_id["experts-1"].error.startswith("unsupported: expert pruning")
