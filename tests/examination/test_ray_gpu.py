"""The Ray executor with GPU tasks (half a GPU each, two checkups side by side): the same verdicts as in-process
CUDA, numbers within float tolerance. Runs where a GPU and Ray are; skipped with the reason elsewhere."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from doctor.examination.ray_executor import RayExecutor
from doctor.examination.runner import Options, examine
from doctor.patient import load_patient
from doctor.spec.checkup import Suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = {
    "name": "ray-gpu",
    "eval": {"corpus": "tinystories-valid", "max_windows": 2, "bootstrap": 20},
    "calibration": {"corpus": "tinystories-calib", "samples": 2},
    "checkups": [
        {"id": "rtn4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32}},
        {"id": "mag", "modification": {"kind": "prune", "sparsity": 0.5}},
    ],
}

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'model-doctor[ray]')")
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_gpu_tasks_agree_with_in_process_cuda(ray_gpu, tmp_path):
    suite = Suite.model_validate(SUITE)
    options = functools.partial(Options, use_predictor=False, device="cuda")
    here = examine(load_patient(None, device="cuda"), suite, options(out_dir=tmp_path / "here"))
    executor = RayExecutor(functools.partial(load_patient, None, device="cuda"), backend="torch", device="cuda",
                           gpus=0.5)
    there = examine(load_patient(None, device="cuda"), suite, options(out_dir=tmp_path / "ray"), executor=executor)
    for ray_result, result in zip(there.checkups, here.checkups, strict=True):
        assert ray_result.status == "ok", ray_result.error
        assert ray_result.verdict == result.verdict
        for key, measurement in result.metrics.items():
            if not key.endswith("_probe_passes"):  # clocks, not results
                assert ray_result.metrics[key].value == pytest.approx(measurement.value, rel=1e-4, abs=1e-6), key
