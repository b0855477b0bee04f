"""The memory estimate before loading, the refusal it leads to, and the placement flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from doctor.cli import main
from doctor.errors import DoctorError
from doctor.patient import count_params, load_patient
from doctor.placement import check
from doctor.placement.estimate import estimate, model_shape
from doctor.placement.flags import Placement, parse_max_memory, placement_from_flags
from doctor.resources import DEMO_MODEL
from doctor.spec.checkup import Suite

SUITE = {
    "name": "estimate",
    "eval": {"corpus": "tinystories-valid", "seq_len": 256, "max_windows": 10, "kl_mode": "full"},
    "calibration": {"corpus": "tinystories-calib", "samples": 16, "seq_len": 128},
    "checkups": [
        {"id": "gptq", "modification": {"kind": "quantize", "method": "gptq", "bits": 4}},
        {"id": "rtn", "modification": {"kind": "quantize", "bits": 4}},
    ],
}


def _demo_shape():
    from transformers import AutoConfig

    return model_shape(AutoConfig.from_pretrained(DEMO_MODEL))


def test_estimate_counts_weights_kl_cache_hessians_and_activations():
    shape = _demo_shape()  # hidden 64, intermediate 172, 8 heads of 8, vocab 512, tied embeddings
    assert shape.params == count_params(load_patient(None).model)
    est = estimate(shape, Suite.model_validate(SUITE), "float32")
    assert est.parts["weights"] == shape.params * 4
    assert est.parts["kl_cache"] == 10 * 255 * 4 * 512  # windows x predicted tokens x full float32 log-probs
    assert est.parts["hessians"] == 4 * (64**2 + 64**2 + 64**2 + 172**2)  # one group: qkv, gate/up, o, down
    assert est.parts["calibration_activations"] == 2 * 16 * 128 * 64 * 4
    half = estimate(shape, Suite.model_validate(SUITE), "bfloat16", dispatched=True)
    assert half.parts["weights"] == shape.params * 2 and half.where["weights"] == "spread"
    assert half.parts["one_block"] == shape.block_params * 2 and shape.block_params < shape.params // 5


def test_no_calibrated_checkup_no_hessians():
    suite = Suite.model_validate({**SUITE, "checkups": SUITE["checkups"][1:]})
    est = estimate(_demo_shape(), suite, "float32")
    assert "hessians" not in est.parts and "calibration_activations" not in est.parts


def test_refused_before_loading_with_the_numbers_and_the_flag(monkeypatch):
    monkeypatch.setattr(check, "free_memory", lambda device: {"cpu": 100_000})
    with pytest.raises(DoctorError, match=r"needs ~.* of host memory .*, 0.0954 MiB available: pass --device-map auto"):
        check.check_memory(None, Suite.model_validate(SUITE), "float32", "cpu", Placement())
    result = CliRunner().invoke(main, ["examine", "--suite", "quick", "--device", "cpu"])
    assert result.exit_code == 2 and "needs ~" in result.output and "Traceback" not in result.output


def test_device_map_without_limits_keeps_the_working_set_free(monkeypatch):
    monkeypatch.setattr(check, "free_memory", lambda device: {"cpu": 1 << 30})
    placement = Placement("auto")
    est = check.check_memory(None, Suite.model_validate(SUITE), "float32", "cpu", placement)
    assert placement.max_memory == {"cpu": (1 << 30) - est.total("host") - est.working_set}


@pytest.mark.parametrize("text, limits", [
    ("0=20GiB,cpu=60GiB", {0: 20 * 2**30, "cpu": 60 * 2**30}),
    ("cpu=30MB", {"cpu": 30 * 10**6}),
    ("1=512MiB, disk=1TB", {1: 512 * 2**20, "disk": 10**12}),
])
def test_max_memory_parses(text, limits):
    assert parse_max_memory(text) == limits


@pytest.mark.parametrize("text, message", [
    ("cpu", "is not DEVICE=SIZE"), ("gpu=1GB", "unknown device 'gpu'"), ("cpu=lots", "is not a size"),
    ("cpu=1GB,cpu=2GB", "cpu is given twice"), ("", "no DEVICE=SIZE"),
])
def test_bad_max_memory_is_one_line_naming_the_flag(text, message):
    with pytest.raises(DoctorError, match=message):
        parse_max_memory(text)
    result = CliRunner().invoke(main, ["examine", "--max-memory", text or ",", "--device", "cpu"])
    assert result.exit_code == 2 and "--max-memory" in result.output and "Traceback" not in result.output


def test_cpu_placement_never_reaches_for_a_gpu(tmp_path):
    placement = placement_from_flags(None, "cpu=30MB", tmp_path / "off", "cpu")
    assert placement.load_kwargs() == {"device_map": "auto", "max_memory": {"cpu": 30 * 10**6},
                                       "offload_folder": str(tmp_path / "off")}
    with pytest.raises(DoctorError, match="names a GPU but --device is cpu"):
        placement_from_flags(None, "0=1GiB", None, "cpu")
