"""Structured pruning: heads (GQA aware) and MLP channels shrink the shapes consistently and keep the model running."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context
from torch import nn

from doctor.compress.adapters import decoder_layers, linear_weight
from doctor.compress.structured import attention_of, head_scores, mlp_of, shrink_linear
from doctor.errors import ModificationError
from doctor.modifications.prune import apply
from doctor.patient import count_params
from doctor.spec.modification import PruneSpec


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 10), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _generates(model, vocab: int) -> None:
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(_ids(vocab), use_cache=True, **kwargs)
        plain = model.generate(_ids(vocab), use_cache=False, **kwargs)
    assert cached.shape == (2, 14) and torch.equal(cached, plain)


def _conv1d(nf: int, nx: int) -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    layer = Conv1D(nf, nx)
    nn.init.normal_(layer.bias)
    return layer


@pytest.mark.parametrize("make", [lambda: nn.Linear(6, 5, bias=True), lambda: _conv1d(5, 6)])
def test_shrink_linear_keeps_the_selected_rows_and_columns(make):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(3, 6)
    rows, cols = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4, 5])
    narrow = shrink_linear(layer, "out", rows)
    assert type(narrow) is type(layer)
    assert torch.allclose(narrow(x), layer(x)[:, rows], atol=1e-6)
    thin = shrink_linear(layer, "in", cols)
    zeroed = torch.zeros_like(x)
    zeroed[:, cols] = x[:, cols]
    assert torch.allclose(thin(x[:, cols]), layer(zeroed), atol=1e-6)


def test_wanda_head_score_by_hand():
    """Each query head's score is sum over its o_proj input columns j of sum_i |W_ij| * ||X_j||."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP

    cfg = LlamaConfig(hidden_size=4, num_attention_heads=2, num_key_value_heads=1, head_dim=2)
    attn = LlamaAttention(cfg, 0)
    with torch.no_grad():
        attn.o_proj.weight.copy_(torch.tensor([[1.0, -2, 0, 1], [0, 1, -3, 0], [2, 0, 1, 0], [0, 0, 0, -1]]))
    block = nn.Module()
    block.self_attn = attn
    block.mlp = LlamaMLP(cfg)  # a whole Llama-like block, as its architecture adapter recognises it
    a = attention_of(block)
    norm = torch.tensor([1.0, 2.0, 0.5, 3.0])
    q, kv = head_scores(a, "wanda", norm)
    # column sums of |W|: [3, 3, 4, 2]; times norms: [3, 6, 2, 6]; heads own columns {0,1} and {2,3}
    assert q.tolist() == [9.0, 8.0]
    assert kv.tolist() == [0.0]


def _dead_heads(patient) -> list[int]:
    """Silence one KV group (or head, for GPT-2) per layer, a different one each layer; returns them."""
    dead = []
    for i, block in enumerate(decoder_layers(patient.model)):
        a = attention_of(block)
        g = i % a.kv_heads
        per = a.heads // a.kv_heads
        q_heads = torch.arange(g * per, (g + 1) * per)
        with torch.no_grad():
            for attr, (q_of, kv_of) in a.inputs.items():
                w = linear_weight(getattr(a.module, attr))
                w[torch.isin(q_of, q_heads) | (kv_of == g)] = 0
            linear_weight(getattr(a.module, a.out))[:, torch.arange(g * per * a.head_dim, (g + 1) * per * a.head_dim)] = 0
        dead.append(g)
    return dead


@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_heads_with_no_contribution_are_removed_first(patient, method, request, tmp_path):
    patient = request.getfixturevalue(patient)
    model = patient.model
    dead = _dead_heads(patient)
    ids = _ids(patient.facts.vocab)
    base = _logits(model, ids)
    kv = attention_of(decoder_layers(model)[0]).kv_heads
    ctx = make_context(patient, tmp_path)
    applied = apply(PruneSpec(structure="heads", method=method, sparsity=1 / kv), ctx)
    assert applied.realized["kv_heads_removed_per_layer"] == [1] * len(dead)
    # removing a head whose output projection columns are zero cannot change the function
    assert (_logits(model, ids) - base).abs().max() < 1e-5
    assert (applied.calibration is not None) == (method == "wanda")
    _generates(model, patient.facts.vocab)
    ctx.undo.restore()


def _numel(module: nn.Module, with_bias: bool = True) -> int:
    bias = getattr(module, "bias", None)
    return module.weight.numel() + (bias.numel() if with_bias and bias is not None else 0)


@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2", "demo_patient"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_heads_reduce_params_by_the_removed_heads(patient, sparsity, request, tmp_path):
    patient = request.getfixturevalue(patient)
    model = patient.model
    attns = [attention_of(b) for b in decoder_layers(model)]
    originals = [{attr: getattr(a.module, attr) for attr in [*a.inputs, a.out]} for a in attns]
    ctx = make_context(patient, tmp_path)
    applied = apply(PruneSpec(structure="heads", sparsity=sparsity), ctx)
    try:
        realized = applied.realized
        expected = 0
        counts = zip(realized["heads_removed_per_layer"], realized["kv_heads_removed_per_layer"], strict=True)
        for a, modules, (removed, removed_kv) in zip(attns, originals, counts, strict=True):
            assert removed == removed_kv * (a.heads // a.kv_heads) > 0
            # q rows (and fused qkv rows) and o columns go with query heads, k and v rows with KV heads
            for attr, role in a.inputs.items():
                share = removed_kv / a.kv_heads if role in ("k", "v") else removed / a.heads
                expected += round(_numel(modules[attr]) * share)
            expected += round(_numel(modules[a.out], with_bias=False) * removed / a.heads)
        assert realized["params_before"] - realized["params_after"] == expected
        assert count_params(model) == realized["params_after"]
        assert model.config.num_attention_heads == attns[0].heads - realized["heads_removed_per_layer"][0]
        _generates(model, patient.facts.vocab)
    finally:
        ctx.undo.restore()


def test_query_heads_within_groups_keep_the_kv_mapping(tiny_llama, tmp_path):
    model = tiny_llama.model
    ctx = make_context(tiny_llama, tmp_path)
    applied = apply(PruneSpec(structure="heads", sparsity=0.5, head_unit="query"), ctx)
    attn = decoder_layers(model)[0].self_attn
    assert applied.realized["kv_heads_removed_per_layer"] == [0, 0]
    assert attn.num_key_value_groups == 1 and attn.q_proj.out_features == attn.k_proj.out_features
    assert model.config.num_attention_heads == model.config.num_key_value_heads == 2
    _generates(model, 128)
    ctx.undo.restore()
    assert attn.num_key_value_groups == 2


def test_query_heads_need_grouped_query_attention(tiny_gpt2, tmp_path):
    ctx = make_context(tiny_gpt2, tmp_path)
    with pytest.raises(ModificationError, match="grouped-query"):
        apply(PruneSpec(structure="heads", sparsity=0.5, head_unit="query"), ctx)
    ctx.undo.restore()


def _dead_channels(patient, fraction: float) -> list[set[int]]:
    """Zero the MLP input rows and output columns of some channels in each layer (different per layer)."""
    dead = []
    for i, block in enumerate(decoder_layers(patient.model)):
        m = mlp_of(block)
        width = linear_weight(getattr(m.module, m.out)).shape[1]
        chosen = torch.randperm(width, generator=torch.Generator().manual_seed(i))[: round(fraction * width)]
        with torch.no_grad():
            for attr in m.inputs:
                linear_weight(getattr(m.module, attr))[chosen] = 0
            linear_weight(getattr(m.module, m.out))[:, chosen] = 0
        dead.append(set(chosen.tolist()))
    return dead


@pytest.mark.parametrize("patient", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_channels_with_no_contribution_are_removed_and_params_drop(patient, method, request, tmp_path):
    patient = request.getfixturevalue(patient)
    model = patient.model
    dead = _dead_channels(patient, 0.3)
    # each channel owns one row (and bias entry) of every input projection and one column of the output one
    per_channel = []
    for block in decoder_layers(model):
        m = mlp_of(block)
        owned = sum(_numel(getattr(m.module, a)) for a in m.inputs) + _numel(getattr(m.module, m.out), False)
        per_channel.append(owned // linear_weight(getattr(m.module, m.out)).shape[1])
    ids = _ids(patient.facts.vocab)
    base = _logits(model, ids)
    ctx = make_context(patient, tmp_path)
    applied = apply(PruneSpec(structure="channels", method=method, sparsity=0.3), ctx)
    removed = applied.realized["channels_removed_per_layer"]
    assert removed == [len(d) for d in dead]
    assert (_logits(model, ids) - base).abs().max() < 1e-5
    drop = applied.realized["params_before"] - applied.realized["params_after"]
    assert drop == sum(r * c for r, c in zip(removed, per_channel, strict=True))
    _generates(model, patient.facts.vocab)
    ctx.undo.restore()


def test_channels_on_demo_model_run_and_generate(demo_patient, tmp_path):
    model = demo_patient.model
    width = model.config.intermediate_size
    ctx = make_context(demo_patient, tmp_path, samples=4, seq_len=32)
    applied = apply(PruneSpec(structure="channels", method="wanda", sparsity=0.5), ctx)
    try:
        kept = width - round(0.5 * width)
        assert model.config.intermediate_size == kept
        assert all(b.mlp.down_proj.in_features == kept for b in decoder_layers(model))
        assert applied.realized["channels_removed_fraction"] == pytest.approx(1 - kept / width)
        assert applied.realized["params_ratio"] < 1
        _generates(model, 512)
    finally:
        ctx.undo.restore()
    assert model.config.intermediate_size == width
