"""Out of memory in one checkup: recorded with device and stage, weights restored, the next checkup unaffected."""

from __future__ import annotations

import pytest
import torch

from doctor.compress import gptq
from doctor.examination.runner import Options, examine
from doctor.placement.oom import is_oom, oom_message
from doctor.spec.checkup import Suite
from tests.conftest import assert_bit_identical, state_snapshot

SUITE = {
    "name": "oom",
    "eval": {"corpus": "tinystories-valid", "max_windows": 2, "bootstrap": 0},
    "calibration": {"corpus": "tinystories-calib", "samples": 4},
    "checkups": [
        {"id": "gptq4", "modification": {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32}},
        {"id": "wanda50", "modification": {"kind": "prune", "method": "wanda", "sparsity": 0.5}},
    ],
}


def test_out_of_memory_in_a_solver_is_a_recorded_failure_and_the_rest_goes_on(tiny_llama, tmp_path, monkeypatch):
    suite = Suite.model_validate(SUITE)
    before = state_snapshot(tiny_llama.model)
    clean = examine(tiny_llama, suite, Options(out_dir=tmp_path / "clean", use_predictor=False))

    real, calls = gptq.gptq_quantize, []

    def runs_out(*args, **kwargs):  # the second layer's solve runs out, after the first layer was written
        calls.append(1)
        if len(calls) > 4:  # four shared-input solves per layer (q/k/v, o, gate/up, down)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(gptq, "gptq_quantize", runs_out)
    failed = examine(tiny_llama, suite, Options(out_dir=tmp_path / "oom", use_predictor=False))

    first, second = failed.checkups
    assert first.status == "error"
    assert first.error.startswith("out of memory on cpu while applying quantize: CUDA out of memory")
    assert_bit_identical(tiny_llama.model, before)
    assert second.status == "ok"
    for key in ("ppl", "kl_mean", "top1_agreement"):
        assert second.metrics[key].value == clean.checkups[1].metrics[key].value, key


@pytest.mark.parametrize("exc, oom", [
    (torch.OutOfMemoryError("CUDA out of memory"), True),
    (MemoryError(), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"), True),
    (RuntimeError("shape mismatch"), False),
])
def test_out_of_memory_is_recognised_in_its_three_forms(exc, oom):
    assert is_oom(exc) is oom


def test_message_names_device_and_stage():
    text = oom_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB\nmore"), "cuda:0",
                       "measuring")
    assert text.startswith("out of memory on cuda:0 while measuring: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert "more" not in text
