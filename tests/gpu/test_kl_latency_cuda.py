"""On a GPU the KL stores keep their data on the host and gather on the device: the KL equals the CPU's for every
store; the evaluation pass never copies whole logits to the host; the latency metric waits for the device."""

from __future__ import annotations

import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.kl_store import KLPlan, make_store
from doctor.metrics.deployment import measure_latency
from doctor.metrics.evaluation import baseline_pass, compare_pass
from tests.conftest import tiny_llama_model

from . import CUDA

pytestmark = CUDA

PLANS = [KLPlan("full"), KLPlan("exact"), KLPlan("mass", target=0.99, bytes_per_token=256), KLPlan("mass", max_entries=8)]


def _logits(seed: int, shape=(3, 20, 96)) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3
    return logits, logits.logsumexp(-1)


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p.mode}-{p.max_entries or p.target}")
def test_kl_gathered_on_cuda_equals_cpu(plan, tmp_path):
    base, base_lse = _logits(0)
    cur, cur_lse = _logits(1)
    rows, cols = slice(0, 3), slice(0, 20)
    results = {}
    for device in ("cpu", "cuda"):
        store = make_store(plan, 3, 20, 96, tmp_path)
        store.add(rows, cols, base.to(device), base_lse.to(device))
        store.finish()
        kl = store.kl(rows, cols, cur.to(device), cur_lse.to(device))
        assert kl.device.type == "cpu"  # results live on the host whatever the logits' device
        results[device] = kl
        assert store.coverage().device.type == "cpu"
    torch.testing.assert_close(results["cuda"], results["cpu"], rtol=1e-5, atol=1e-6)


def test_evaluation_pass_on_cuda_equals_cpu():
    model = tiny_llama_model(layers=2)
    windows = torch.randint(3, 128, (4, 48), generator=torch.Generator().manual_seed(0))
    out = {}
    for device in ("cpu", "cuda"):
        backend = TorchBackend(model.to(device))
        base, cache = baseline_pass(backend, windows, 128, batch_size=2)
        weight = model.model.layers[0].mlp.down_proj.weight
        original = weight.detach().clone()
        with torch.no_grad():
            weight.mul_(0.9)
            current = compare_pass(backend, windows, cache, 128, batch_size=2)
            weight.copy_(original)
        out[device] = (base.nll, current.nll, current.kl_tokens, current.agree_window)
    for a, b in zip(out["cuda"], out["cpu"], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_latency_waits_for_the_device(monkeypatch):
    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device) or real(device))
    backend = TorchBackend(tiny_llama_model().to("cuda"))
    latency = measure_latency(backend, torch.randint(3, 128, (1, 64)), repeats=3, warmup=1)
    assert len(calls) == 4  # one per timed or warm-up pass, before the clock is read
    assert latency.value > 0
