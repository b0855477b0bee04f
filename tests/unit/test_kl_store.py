"""The baseline's KL stores: mass mode keeps the fewest entries that reach the target, exact mode matches full."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.metrics.evaluation import baseline_pass, compare_pass, kl_plan
from doctor.metrics.language import KL_QUANTILES, against_baseline
from doctor.modifications.base import UndoLog


def _model(vocab=2000):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # peaked, trained-looking distributions: a few likely tokens, a long tail
        model.lm_head.weight.mul_(40)
    return model


def _perturbed(model):
    undo = UndoLog()
    weight = model.model.layers[0].mlp.down_proj.weight
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(0.3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    return undo


@pytest.fixture(scope="module")
def setup():
    model = _model()
    windows = torch.randint(0, 2000, (3, 40), generator=torch.Generator().manual_seed(0))
    return model, windows, TorchBackend(model)


def test_mass_mode_keeps_the_fewest_entries_that_reach_the_target(setup):
    model, windows, backend = setup
    _, cache = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "mass", 0.9, bytes_per_token=100_000))
    store = cache.store
    with torch.no_grad():
        logp = model(windows).logits[:, :-1].log_softmax(-1)
    sorted_p = logp.exp().sort(-1, descending=True).values.cumsum(-1)
    needed = (sorted_p < 0.9).sum(-1) + 1  # (windows, preds): the fewest entries that reach 0.9
    assert torch.equal(store.counts, needed)
    assert bool((store.coverage() >= 0.9 - 1e-5).all())
    assert 1 < store.counts.float().mean() < 2000  # adaptive: neither one entry nor the whole vocabulary


def test_mass_mode_is_a_lower_bound_that_closes_in_with_the_target(setup, tmp_path):
    model, windows, backend = setup
    caches = {t: baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "mass", t, 100_000))[1]
              for t in (0.5, 0.9, 0.999)}
    _, full = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "full"))
    undo = _perturbed(model)
    try:
        exact = compare_pass(backend, windows, full, 2000).kl_window.mean()
        kl = {t: compare_pass(backend, windows, c, 2000).kl_window.mean() for t, c in caches.items()}
    finally:
        undo.restore()
    assert exact > 0.01
    assert kl[0.5] <= kl[0.9] + 1e-6 <= kl[0.999] + 2e-6 <= exact + 3e-6
    assert kl[0.999] == pytest.approx(exact, rel=0.01)


def test_budget_caps_the_entries_and_the_coverage_says_so(setup):
    _, windows, backend = setup
    _, cache = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "mass", 0.999, bytes_per_token=8 + 8 * 4))
    assert int(cache.store.counts.max()) == 4
    facts = cache.describe(2000)
    assert facts["kl_coverage_min"] < 0.999 and facts["kl_bytes_per_token"] <= 8 + 8 * 4 + 8


def test_exact_mode_matches_full_kl_and_lives_on_disk(setup, tmp_path):
    model, windows, backend = setup
    _, exact = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "exact"), spill_dir=tmp_path)
    _, full = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "full"))
    assert exact.store.bytes_per_token() == 2 * 2000 + 8
    assert isinstance(exact.store.codes, np.memmap)
    undo = _perturbed(model)
    try:
        a = compare_pass(backend, windows, full, 2000).kl_tokens
        b = compare_pass(backend, windows, exact, 2000).kl_tokens
    finally:
        undo.restore()
    assert b.mean() == pytest.approx(a.mean(), rel=1e-3)
    assert np.quantile(b, 0.99) == pytest.approx(np.quantile(a, 0.99), rel=1e-3)


def test_llama_cpp_statistics_are_ordered_quantiles_and_delta_p(setup):
    model, windows, backend = setup
    base, cache = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "full"))
    undo = _perturbed(model)
    try:
        cur = compare_pass(backend, windows, cache, 2000)
        with torch.no_grad():
            logits = model(windows).logits[:, :-1]
    finally:
        undo.restore()
    m = against_baseline(base, cur, 0, 0)
    values = [m[k].value for k in KL_QUANTILES]  # max, p99.9, p99, p95, p90, median
    assert values == sorted(values, reverse=True)
    assert m["kl_max"].value == pytest.approx(float(cur.kl_tokens.max()))
    target = windows[:, 1:]
    p_now = logits.softmax(-1).gather(-1, target[..., None]).squeeze(-1)
    p_base = cache.target_logp.exp()
    assert m["delta_p_mean"].value == pytest.approx(float((p_now - p_base).mean()), abs=1e-6)
    assert m["delta_p_p01"].value <= m["delta_p_mean"].value <= m["delta_p_p99"].value
