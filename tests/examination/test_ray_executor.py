"""The Ray executor on a local Ray runtime (2 CPUs, one per module): the same results as in-process, a lost
worker costs only its checkup (retried once, then recorded as failed), and --resume reuses its journal."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from doctor.cli import main
from doctor.examination.ray_executor import RayExecutor
from doctor.examination.runner import Options, examine
from doctor.patient import load_patient
from doctor.spec.checkup import Suite
from tests.examination.ray_hold import HOLD_DIR_ENV

ROOT = Path(__file__).resolve().parents[2]
TIMING = {"layer_probe_passes", "attention_probe_passes"}  # priced against the driver's own pass time: a ratio of clocks, not a result

SUITE = {
    "name": "ray",
    # the exact KL store (an unlinked file on the driver) is the one that must travel by value
    "eval": {"corpus": "tinystories-valid", "max_windows": 2, "bootstrap": 20, "kl_mode": "exact"},
    "calibration": {"corpus": "tinystories-calib", "samples": 2},
    "checkups": [
        {"id": "rtn4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32},
         "expect": {"ppl_ratio": {"max": 100}}},
        {"id": "gptq4", "modification": {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32}},
        {"id": "mag", "modification": {"kind": "prune", "sparsity": 0.5},
         "metrics": ["perplexity", "kl", "layer_error", "attention"],
         "expect": {"top1_agreement": {"min": 0.9999}}, "severity": "high"},
    ],
}


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'model-doctor[ray]')")
    hold = tmp_path_factory.mktemp("hold")
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, HOLD_DIR_ENV: str(hold)},
                          "worker_process_setup_hook": "tests.examination.ray_hold.install"})
    yield hold
    ray.shutdown()


def _options(out: Path, resume: bool = False) -> Options:
    return Options(out_dir=out, use_predictor=False, resume=resume)


def _ray() -> RayExecutor:
    return RayExecutor(functools.partial(load_patient, None), backend="torch", device="cpu")


def _comparable(result) -> dict:
    metrics = {k: m.value for k, m in result.metrics.items() if k not in TIMING}
    layers = [{k: v for k, v in layer.model_dump().items() if k != "seconds"} for layer in result.layers]
    return {"status": result.status, "verdict": result.verdict, "metrics": metrics, "realized": result.realized,
            "layers": layers, "thresholds": [t.model_dump() for t in result.thresholds]}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return examine(load_patient(None), Suite.model_validate(SUITE), _options(tmp_path_factory.mktemp("here")))


def test_results_equal_the_in_process_executor(ray_runtime, in_process, demo_patient, tmp_path):
    exam = examine(demo_patient, Suite.model_validate(SUITE), _options(tmp_path), executor=_ray())
    assert [c.id for c in exam.checkups] == [c.id for c in in_process.checkups]  # suite order, not arrival
    for ray_result, here in zip(exam.checkups, in_process.checkups, strict=True):
        assert ray_result.status == "ok", ray_result.error
        assert _comparable(ray_result) == _comparable(here), ray_result.id
    assert [c.verdict for c in exam.checkups] == ["pass", "pass", "fail"]
    assert (exam.verdict, exam.exit_code) == (in_process.verdict, in_process.exit_code)
    journal = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in journal[1:]) == ["gptq4", "mag", "rtn4"]


def _kill_holders(hold: Path, checkup: str, kills: int, errors: list) -> None:
    """SIGKILL the worker holding `checkup`, `kills` times (each retry is a new worker), then let it go on."""
    killed: set[int] = set()
    deadline = time.monotonic() + 240
    while len(killed) < kills and time.monotonic() < deadline:
        for pid_file in hold.glob(f"{checkup}.*.pid"):
            pid = int(pid_file.read_text())
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    if len(killed) < kills:
        errors.append(f"{checkup}: only {len(killed)} of {kills} holding workers appeared")
    (hold / f"{checkup}.go").touch()


def test_a_lost_worker_costs_only_its_checkup_and_resume_runs_it_again(ray_runtime, in_process, demo_patient,
                                                                       tmp_path):
    hold = ray_runtime
    for checkup in ("rtn4", "mag"):  # rtn4's worker dies once (the retry succeeds), mag's on both attempts
        (hold / f"{checkup}.hold").touch()
    errors: list[str] = []
    killers = [threading.Thread(target=_kill_holders, args=(hold, "rtn4", 1, errors)),
               threading.Thread(target=_kill_holders, args=(hold, "mag", 2, errors))]
    for killer in killers:
        killer.start()
    try:
        exam = examine(demo_patient, Suite.model_validate(SUITE), _options(tmp_path), executor=_ray())
    finally:
        for checkup in ("rtn4", "mag"):
            (hold / f"{checkup}.hold").unlink()
            (hold / f"{checkup}.go").touch()
        for killer in killers:
            killer.join()
    assert not errors, errors
    assert len(list(hold.glob("rtn4.*.pid"))) >= 2 and len(list(hold.glob("mag.*.pid"))) == 2
    rtn4, gptq4, mag = exam.checkups
    assert _comparable(rtn4) == _comparable(in_process.checkups[0])  # retried on a fresh worker: the same numbers
    assert _comparable(gptq4) == _comparable(in_process.checkups[1])  # untouched by its neighbours' deaths
    assert mag.status == "error" and mag.error.startswith("worker lost twice: "), mag.error
    assert "\n" not in mag.error
    assert exam.verdict == "failed" and exam.exit_code == 1  # the report goes on, and says a checkup is missing

    # --resume: the two finished checkups come from the journal; only the lost one is submitted again
    messages: list[str] = []
    resumed = examine(demo_patient, Suite.model_validate(SUITE), _options(tmp_path, resume=True),
                      progress=messages.append, executor=_ray())
    assert [m for m in messages if "reused from results.jsonl" in m] == [
        "rtn4: reused from results.jsonl", "gptq4: reused from results.jsonl"]
    assert "1 checkups on Ray" in messages
    assert resumed.checkups[0].started == rtn4.started and resumed.checkups[1].started == gptq4.started
    assert _comparable(resumed.checkups[2]) == _comparable(in_process.checkups[2])
    assert resumed.verdict == in_process.verdict

    # and the in-process executor resumes a Ray run's journal just the same: nothing left to run
    again: list[str] = []
    examine(demo_patient, Suite.model_validate(SUITE), _options(tmp_path, resume=True), progress=again.append)
    assert sum("reused from results.jsonl" in m for m in again) == 3


def test_cli_runs_a_suite_on_ray(ray_runtime, tmp_path):
    suite = tmp_path / "one.yaml"
    suite.write_text(json.dumps({**SUITE, "checkups": SUITE["checkups"][:1]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["examine", "--suite", str(suite), "--executor", "ray", "--checkup-cpus", "1",
                                       "--no-predictor", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rtn4" in result.output and "PASS" in result.output
    checkups = json.loads((out / "results.json").read_text())["checkups"]
    assert [(c["id"], c["status"]) for c in checkups] == [("rtn4", "ok")]


def test_cli_without_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(main, ["examine", "--executor", "ray", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == 'error: --executor ray needs Ray, which is not installed: ' \
                                    'pip install "model-doctor[ray]"'


def test_cli_refuses_ray_options_without_the_ray_executor(tmp_path):
    result = CliRunner().invoke(main, ["examine", "--address", "ray://head:10001", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--address only apply to --executor ray" in result.output


def test_cli_refuses_a_gpu_share_for_a_cpu_baseline(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'model-doctor[ray]')")
    result = CliRunner().invoke(main, ["examine", "--executor", "ray", "--device", "cpu", "--checkup-gpus", "1",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "checkups run on the baseline's device" in result.output


def test_the_exact_kl_store_travels_by_value():
    import pickle

    import torch

    from doctor.kl_store import ExactStore

    store = ExactStore(2, 5, 11)
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    store.add(slice(0, 2), slice(0, 5), logits, logits.logsumexp(-1))
    store.finish()
    copy = pickle.loads(pickle.dumps(store))
    other = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(1))
    args = (slice(0, 2), slice(1, 4), other[:, 1:4], other[:, 1:4].logsumexp(-1))
    assert torch.equal(copy.kl(*args), store.kl(*args))
    assert torch.equal(copy.coverage(), store.coverage()) and copy.bytes_per_token() == store.bytes_per_token()


def test_the_hidden_kl_store_travels_by_value(demo_patient, tmp_path):
    import torch

    pickle = pytest.importorskip("ray.cloudpickle", reason="ray is not installed (pip install 'model-doctor[ray]')")

    from doctor.backends.torch_backend import TorchBackend
    from doctor.metrics.evaluation import baseline_pass, kl_plan

    model, vocab = demo_patient.model, demo_patient.facts.vocab
    windows = torch.randint(3, vocab, (2, 32), generator=torch.Generator().manual_seed(1))
    _, cache = baseline_pass(TorchBackend(model), windows, vocab, plan=kl_plan(vocab, "hidden"), spill_dir=tmp_path)
    assert cache.mode == "hidden"
    copy = pickle.loads(pickle.dumps(cache.store))
    other = torch.randn(2, 5, vocab, generator=torch.Generator().manual_seed(2))
    args = (slice(0, 2), slice(3, 8), other, other.logsumexp(-1))
    assert torch.equal(copy.kl(*args), cache.store.kl(*args))
    assert copy.facts() == cache.store.facts() and copy.bytes_per_token() == cache.store.bytes_per_token()
