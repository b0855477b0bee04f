"""The evaluation pass: NLL equals the model's own loss; KL and agreement are identity-correct."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.errors import NumericError
from doctor.metrics.evaluation import FULL_VOCAB_LIMIT, baseline_pass, compare_pass, kl_plan
from doctor.metrics.language import against_baseline, perplexity


def _windows(vocab=128, n=6, seq=32, seed=0):
    return torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_nll_matches_hf_loss(tiny_llama):
    windows = _windows()
    result, _ = baseline_pass(TorchBackend(tiny_llama.model), windows, 128, batch_size=4)
    with torch.no_grad():
        losses = [tiny_llama.model(w[None], labels=w[None]).loss.item() for w in windows]
    np.testing.assert_allclose(result.nll, losses, rtol=1e-5)
    ppl = perplexity(result, 200, 0)["ppl"]
    assert ppl.value == pytest.approx(math.exp(np.mean(losses)), rel=1e-6)
    assert ppl.lower <= ppl.value <= ppl.upper


@pytest.mark.parametrize("plan", [kl_plan(128), kl_plan(128, top_k=8), kl_plan(128, "mass", 0.9),
                                  kl_plan(128, "exact")], ids=["full", "top-8", "mass", "exact"])
def test_identity_kl_zero_and_agreement_one(tiny_llama, plan, tmp_path):
    backend, windows = TorchBackend(tiny_llama.model), _windows()
    base, cache = baseline_pass(backend, windows, 128, plan=plan, spill_dir=tmp_path)
    cur = compare_pass(backend, windows, cache, 128)
    m = against_baseline(base, cur, 100, 0)
    assert m["kl_mean"].value == pytest.approx(0, abs=1e-6)
    assert m["kl_max"].value == pytest.approx(0, abs=1e-5)
    assert m["delta_p_rms"].value == 0.0
    assert m["top1_agreement"].value == 1.0
    assert m["ppl_ratio"].value == pytest.approx(1.0)


def test_topk_kl_is_a_close_lower_bound_of_full_kl(demo_patient):
    """On a trained (peaked) model, top-16 keeps most of the mass and most of the KL."""
    from doctor.modifications.base import UndoLog

    model = demo_patient.model
    from doctor.data.texts import eval_windows, resolve_corpus, tokenize

    text = resolve_corpus("tinystories-valid", demo=True, purpose="eval")
    windows = eval_windows(tokenize(text, demo_patient.tokenizer), 128, 3)
    backend = TorchBackend(model)
    _, full = baseline_pass(backend, windows, 512)
    _, topk = baseline_pass(backend, windows, 512, top_k=16)
    undo = UndoLog()
    weight = model.model.layers[0].mlp.down_proj.weight
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(0.05 * torch.randn_like(weight))
    try:
        kl_full = compare_pass(backend, windows, full, 512).kl_window.mean()
        result = compare_pass(backend, windows, topk, 512)
    finally:
        undo.restore()
    assert 0 < result.kl_window.mean() <= kl_full + 1e-6
    assert result.kl_window.mean() > 0.7 * kl_full
    assert result.coverage > 0.8


def test_chunked_head_equals_full_logits(tiny_llama):
    windows = _windows(n=2, seq=40)
    with torch.no_grad():
        full = tiny_llama.model(windows).logits
    chunks = list(TorchBackend(tiny_llama.model).logits_chunks(windows, 7))
    assert [s for s, _ in chunks] == list(range(0, 40, 7))
    torch.testing.assert_close(torch.cat([c for _, c in chunks], 1), full, rtol=1e-5, atol=1e-5)


def test_non_finite_logits_raise(tiny_llama):
    windows = _windows(n=2)
    backend = TorchBackend(tiny_llama.model)
    _, cache = baseline_pass(backend, windows, 128)
    with torch.no_grad():
        tiny_llama.model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NumericError, match="NaN"):
        compare_pass(backend, windows, cache, 128)


def _vocab_llama(vocab: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("vocab", [256, FULL_VOCAB_LIMIT + 1])
def test_kl_mode_follows_the_vocabulary_and_states_its_coverage(vocab):
    """Full log-probs for small vocabularies; by mass, with its coverage and a bounded size, for large ones."""
    model = _vocab_llama(vocab)
    windows = torch.randint(0, vocab, (2, 33), generator=torch.Generator().manual_seed(0))
    backend = TorchBackend(model)
    base, cache = baseline_pass(backend, windows, vocab)
    large = vocab > FULL_VOCAB_LIMIT
    assert cache.mode == ("mass" if large else "full")
    facts = cache.describe(vocab)
    assert facts["kl_bytes_per_token"] <= (4096 + 8 if large else 4 * vocab + 8)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    m = against_baseline(base, compare_pass(backend, windows, cache, vocab), 0, 0)
    coverage = m["kl_coverage"].value
    assert (0 < coverage < 1) if large else coverage == 1.0
    assert coverage == pytest.approx(facts["kl_coverage_mean"]) and m["kl_coverage_min"].value <= coverage
    assert m["kl_mean"].value > 0
