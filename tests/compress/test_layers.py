"""remove_layers (Block Influence, ShortGPT) and expand_layers (LLaMA Pro identity init)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context

from doctor.compress.adapters import decoder_layers
from doctor.errors import ModificationError
from doctor.modifications.layers import apply_expand, apply_remove, block_influence, insertion_points
from doctor.patient import count_params
from doctor.spec.modification import ExpandLayersSpec, RemoveLayersSpec


def _ids(vocab: int, length: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (2, length), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _generates_consistently(model, vocab: int) -> None:
    """Greedy generation with the KV cache must equal generation without it (layer_idx and cache slots agree)."""
    ids = _ids(vocab, 8)
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(ids, use_cache=True, **kwargs)
        plain = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 12)
    assert torch.equal(cached, plain)


def _attention_indices(model) -> list[int]:
    return [m.layer_idx for b in decoder_layers(model) for m in b.modules() if isinstance(getattr(m, "layer_idx", None), int)]


def test_block_influence_is_one_minus_cosine_of_hidden_states(demo_patient, tmp_path):
    model = demo_patient.model
    windows = make_context(demo_patient, tmp_path, samples=4, seq_len=32).calibration(None).windows
    influence = block_influence(model, windows)
    with torch.no_grad():
        hidden = model(input_ids=windows, output_hidden_states=True, use_cache=False).hidden_states
    # hidden_states[i] is block i's input; the last entry is after the final norm, so check all but the last block
    for i in range(len(influence) - 1):
        cos = torch.nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1).mean()
        assert influence[i] == pytest.approx(1 - float(cos), abs=1e-5)
    assert all(0 <= bi <= 2 for bi in influence)


def test_remove_by_influence_drops_least_influential_and_still_generates(demo_patient, tmp_path):
    model = demo_patient.model
    ctx = make_context(demo_patient, tmp_path, samples=4, seq_len=32)
    blocks = list(decoder_layers(model))
    before = count_params(model)
    applied = apply_remove(RemoveLayersSpec(count=2), ctx)
    try:
        influence = applied.realized["block_influence"]
        removed = applied.realized["layers_removed"]
        assert sorted(removed) == sorted(sorted(range(len(blocks)), key=influence.__getitem__)[:2])
        expected = sum(p.numel() for i in removed for p in blocks[i].parameters())
        assert applied.realized["params_before"] == before
        assert before - count_params(model) == expected == before - applied.realized["params_after"]
        assert model.config.num_hidden_layers == len(decoder_layers(model)) == len(blocks) - 2
        assert _attention_indices(model) == list(range(len(blocks) - 2))
        assert applied.calibration is not None and applied.calibration.ids_sha256
        _generates_consistently(model, 512)
    finally:
        ctx.undo.restore()


@pytest.mark.parametrize(
    ("spec", "removed"),
    [
        (RemoveLayersSpec(by="first", count=1), [0]),
        (RemoveLayersSpec(by="last", fraction=0.5), [1]),
        (RemoveLayersSpec(by="indices", indices=[-1]), [1]),
    ],
)
def test_remove_by_position(tiny_llama, tmp_path, spec, removed):
    ctx = make_context(tiny_llama, tmp_path)
    kept = [b for i, b in enumerate(decoder_layers(tiny_llama.model)) if i not in removed]
    applied = apply_remove(spec, ctx)
    assert applied.realized["layers_removed"] == removed
    assert list(decoder_layers(tiny_llama.model)) == kept
    _generates_consistently(tiny_llama.model, 128)
    ctx.undo.restore()


def test_remove_gpt2_updates_layer_count(tiny_gpt2, tmp_path):
    ctx = make_context(tiny_gpt2, tmp_path)
    apply_remove(RemoveLayersSpec(count=1), ctx)
    assert tiny_gpt2.model.config.n_layer == 1 == len(decoder_layers(tiny_gpt2.model))
    _generates_consistently(tiny_gpt2.model, 128)
    ctx.undo.restore()
    assert tiny_gpt2.model.config.n_layer == 2


@pytest.mark.parametrize("spec", [RemoveLayersSpec(by="first", count=2), RemoveLayersSpec(by="indices", indices=[5])])
def test_remove_rejects_impossible_requests(tiny_llama, tmp_path, spec):
    ctx = make_context(tiny_llama, tmp_path)
    with pytest.raises(ModificationError):
        apply_remove(spec, ctx)
    assert len(ctx.undo) == 0


@pytest.mark.parametrize(("total", "count"), [(5, 1), (5, 2), (4, 2), (2, 3), (8, 3)])
def test_insertion_points_spread_evenly(total, count):
    points = insertion_points(total, count, "interleave")
    assert len(points) == count
    assert points == sorted(points) and points[-1] == total - 1 and points[0] >= 0
    assert insertion_points(total, count, "end") == [total - 1] * count


@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2", "demo_patient"])
def test_identity_expansion_keeps_logits_and_copy_does_not(patient, request, tmp_path):
    patient = request.getfixturevalue(patient)
    model = patient.model
    ids = _ids(patient.facts.vocab)
    base = _logits(model, ids)
    layers = len(decoder_layers(model))
    ctx = make_context(patient, tmp_path)
    applied = apply_expand(ExpandLayersSpec(count=2, init="identity"), ctx)
    try:
        assert len(decoder_layers(model)) == model.config.num_hidden_layers == layers + 2
        assert (_logits(model, ids) - base).abs().max() < 1e-5
        added = applied.realized["params_after"] - applied.realized["params_before"]
        assert added == sum(sum(p.numel() for p in decoder_layers(model)[i].parameters()) for i in applied.realized["inserted_at"])
        assert _attention_indices(model) == list(range(layers + 2))
        _generates_consistently(model, patient.facts.vocab)
    finally:
        ctx.undo.restore()
    apply_expand(ExpandLayersSpec(count=2, init="copy", placement="end"), ctx)
    try:
        assert (_logits(model, ids) - base).abs().max() > 1e-3
    finally:
        ctx.undo.restore()
    assert torch.equal(_logits(model, ids), base)
