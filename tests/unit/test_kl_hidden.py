"""The hidden KL store: the baseline's final hidden states and a frozen head give the full store's KL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.compress.quantizer import quantize_rtn
from doctor.kl_hidden import HiddenUnfit, output_head
from doctor.metrics.evaluation import HIDDEN_MIN_COMPRESSION, baseline_pass, compare_pass, kl_plan
from doctor.modifications.base import UndoLog
from tests.unit.test_kl_store import _model, _perturbed


def _same_kl(tokens, reference):
    """Equal up to float32 rounding: the mean to 1e-5 relative, each token to 1e-4."""
    assert float(tokens.mean()) == pytest.approx(float(reference.mean()), rel=1e-5)
    np.testing.assert_allclose(tokens, reference, rtol=1e-4, atol=1e-6)


def _kl_pair(model, windows, vocab, plan, tmp_path, modify=_perturbed):
    """KL per token against a full float32 store and against `plan`'s store, after `modify`."""
    backend = TorchBackend(model)
    _, full = baseline_pass(backend, windows, vocab, plan=kl_plan(vocab, "full"))
    _, other = baseline_pass(backend, windows, vocab, plan=plan, spill_dir=tmp_path)
    undo = modify(model)
    try:
        return compare_pass(backend, windows, full, vocab).kl_tokens, compare_pass(backend, windows, other, vocab)
    finally:
        undo.restore()


@pytest.fixture(scope="module")
def peaked():
    return _model(), torch.randint(0, 2000, (3, 40), generator=torch.Generator().manual_seed(0))


def test_hidden_store_gives_the_full_stores_kl_on_a_random_model(peaked, tmp_path):
    model, windows = peaked
    full, hidden = _kl_pair(model, windows, 2000, kl_plan(2000, "hidden"), tmp_path)
    assert full.mean() > 0.01
    _same_kl(hidden.kl_tokens, full)
    assert hidden.coverage == hidden.coverage_min == 1.0


def test_hidden_store_gives_the_full_stores_kl_on_the_demo_model(demo_patient, tmp_path):
    model, vocab = demo_patient.model, demo_patient.facts.vocab
    windows = torch.randint(3, vocab, (2, 64), generator=torch.Generator().manual_seed(1))

    def perturb(m):
        undo = UndoLog()
        weight = m.model.layers[0].mlp.down_proj.weight
        undo.save_tensor(weight)
        with torch.no_grad():
            weight.mul_(0.7)
        return undo

    full, hidden = _kl_pair(model, windows, vocab, kl_plan(vocab, "hidden"), tmp_path, perturb)
    assert full.mean() > 1e-3
    _same_kl(hidden.kl_tokens, full)


def _rtn_on_head(model):
    """A checkup that quantizes the output head itself (RTN 3-bit), as a modification would, in place."""
    undo = UndoLog()
    weight = output_head(model).weight
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.copy_(quantize_rtn(weight, 3, 32, symmetric=False))
    return undo


def test_a_checkup_that_modifies_the_head_does_not_change_the_stored_baseline(peaked, tmp_path):
    model, windows = peaked
    backend = TorchBackend(model)
    _, cache = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "hidden"), spill_dir=tmp_path)
    frozen = cache.store.weight.clone()
    full, hidden = _kl_pair(model, windows, 2000, kl_plan(2000, "hidden"), tmp_path, _rtn_on_head)
    assert full.mean() > 0.01  # the head's quantization shows in KL ...
    _same_kl(hidden.kl_tokens, full)  # ... against the untouched baseline
    undo = _rtn_on_head(model)
    try:
        assert torch.equal(cache.store.weight, frozen)
        assert not torch.equal(output_head(model).weight, frozen)
    finally:
        undo.restore()


def test_tied_embeddings_are_copied_too(tmp_path):
    from tests.conftest import tiny_gpt2_model

    model = tiny_gpt2_model()  # the head is the token embedding
    windows = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(2))
    full, hidden = _kl_pair(model, windows, 128, kl_plan(128, "hidden"), tmp_path, _rtn_on_head)
    assert full.mean() > 1e-4
    _same_kl(hidden.kl_tokens, full)


def test_a_softcapped_head_gets_its_transform_from_the_config(tmp_path):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
                       max_position_embeddings=64)
    model = Gemma2ForCausalLM(cfg).eval()
    windows = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))
    full, hidden = _kl_pair(model, windows, 300, kl_plan(300, "hidden"), tmp_path)
    _same_kl(hidden.kl_tokens, full)
    _, cache = baseline_pass(TorchBackend(model), windows, 300, plan=kl_plan(300, "hidden"), spill_dir=tmp_path)
    facts = cache.describe(300)
    assert facts["kl_mode"] == "hidden" and facts["kl_head_transform"] == "soft-capping at 2"


def test_a_head_it_cannot_reproduce_falls_back_with_the_reason(peaked, tmp_path):
    model, windows = peaked
    model.config.output_multiplier = 3.0  # the backend runs the full forward; a transform the store does not know
    original = model.forward

    def scaled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 3.0
        return out

    model.forward = scaled
    try:
        backend = TorchBackend(model)
        base, cache = baseline_pass(backend, windows, 2000, plan=kl_plan(2000, "hidden"), spill_dir=tmp_path)
    finally:
        del model.forward, model.config.output_multiplier
    facts = cache.describe(2000)
    assert facts["kl_mode"] == "full"  # the present rule for this vocabulary
    assert "differ from the model's" in facts["kl_hidden_fallback"]
    assert base.coverage == pytest.approx(facts["kl_coverage_mean"])


def test_a_non_linear_head_falls_back_before_the_pass(peaked, tmp_path):
    model, windows = peaked
    head = model.lm_head
    model.lm_head = torch.nn.Sequential(head)
    try:
        with pytest.raises(HiddenUnfit, match="Sequential"):
            output_head(model)
        _, cache = baseline_pass(TorchBackend(model), windows, 2000, plan=kl_plan(2000, "hidden"))
    finally:
        model.lm_head = head
    facts = cache.describe(2000)
    assert facts["kl_mode"] == "full" and "not a linear layer" in facts["kl_hidden_fallback"]


def test_an_offloaded_head_is_not_copied():
    head = torch.nn.Linear(8, 16, device="meta")
    model = type("M", (), {"get_output_embeddings": lambda self: head})()
    with pytest.raises(HiddenUnfit, match="offloaded"):
        output_head(model)
    assert kl_plan(16, model=model, tokens=10**9).mode == "full"


def test_auto_keeps_hidden_states_only_when_they_are_50x_smaller(peaked):
    model, _ = peaked  # vocabulary 2000, hidden 32, head 256 kB
    assert kl_plan(2000, model=model, tokens=100).mode == "full"  # the head's share dominates a short text
    assert kl_plan(2000, model=model, tokens=100_000).mode == "hidden"
    assert kl_plan(2000).mode == "full"  # nothing known of the model: the vocabulary rule
    assert kl_plan(2000, model=model, tokens=5000).mode == "full"  # float32 states: 43x
    assert kl_plan(2000, model=model, tokens=5000, hidden_dtype="float16").mode == "hidden"  # 65x
    per_token = 32 * 4 + 2000 * 32 * 4 / 100_000 + 8
    assert 4 * 2000 / per_token >= HIDDEN_MIN_COMPRESSION


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_states_are_stored_and_read_back(peaked, tmp_path, dtype):
    model, windows = peaked
    plan = kl_plan(2000, "hidden", hidden_dtype=dtype)
    full, hidden = _kl_pair(model, windows, 2000, plan, tmp_path)
    assert hidden.kl_tokens.mean() == pytest.approx(full.mean(), rel=0.01)
    _, cache = baseline_pass(TorchBackend(model), windows, 2000, plan=plan, spill_dir=tmp_path)
    assert cache.store.bytes_per_token() == 32 * 2 + cache.store.head_bytes / (3 * 39)
    assert isinstance(cache.store.states, np.memmap)


def test_an_examination_spills_hidden_states_and_resumes(tiny_llama, tmp_path):
    from doctor.examination.runner import Options, examine
    from doctor.spec.checkup import Suite

    suite = {"name": "t", "eval": {"corpus": "tinystories-valid", "max_windows": 3, "bootstrap": 0},
             "checkups": [{"id": "rtn4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32}},
                          {"id": "rtn3", "modification": {"kind": "quantize", "bits": 3, "group_size": 32}}]}
    kl = {}
    for mode in ("full", "hidden"):
        spec = Suite.model_validate(dict(suite, eval=dict(suite["eval"], kl_mode=mode)))
        out = tmp_path / mode
        exam = examine(tiny_llama, spec, Options(out_dir=out, use_predictor=False))
        assert exam.baseline.health["kl_mode"] == mode
        kl[mode] = [c.metrics["kl_mean"].value for c in exam.checkups]
        assert not list(out.glob("doctor-kl-*"))  # the spilled states went with the store
    assert kl["hidden"] == pytest.approx(kl["full"], rel=1e-4)  # KL near 1e-4: float32 sums over the vocabulary
    resumed = examine(tiny_llama, spec, Options(out_dir=out, use_predictor=False, resume=True))
    assert resumed.baseline.health["kl_mode"] == "hidden"
    assert [c.metrics["kl_mean"].value for c in resumed.checkups] == kl["hidden"]
