"""Layer probe: identity on the unmodified model, localisation of a single modified block, layer changes."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from doctor.compress.adapters import decoder_layers, layer_container
from doctor.metrics.layerwise import LayerProbe, attention_entropy, outlier_ratio, summary
from doctor.modifications.base import UndoLog
from tests.conftest import tiny_gpt2_model, tiny_llama_model


def windows(n: int = 2, seq: int = 24) -> torch.Tensor:
    return torch.randint(3, 128, (n, seq), generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    if request.param == "llama":
        return tiny_llama_model(layers=4)
    return tiny_gpt2_model()


def test_baseline_stats_are_in_range(model):
    before = model.config._attn_implementation
    probe = LayerProbe.capture(model, windows(), attention=True)
    assert model.config._attn_implementation == before  # eager only while probing
    stats = probe.baseline_stats()
    assert [s.layer for s in stats] == list(range(len(decoder_layers(model))))
    heads_max_entropy = math.log(windows().shape[1])
    for s in stats:
        assert 0.0 <= s.extra["block_influence"] <= 2.0
        assert s.extra["outlier_ratio"] >= 1.0 and s.extra["outlier_max"] > 0
        assert 0.0 <= s.extra["attention_entropy"] <= heads_max_entropy


def test_unmodified_model_has_zero_error(model):
    probe = LayerProbe.capture(model, windows(), attention=True)
    stats = probe.compare(model, attention=True)
    assert all(s.rel_error == 0.0 and s.extra["local_error"] == 0.0 for s in stats)
    assert all(s.extra["attention_entropy_shift"] == 0.0 for s in stats)
    assert summary(stats)["layer_error_max"] == 0.0


def test_a_perturbed_block_is_localised(model):
    probe = LayerProbe.capture(model, windows())
    target = 1
    undo = UndoLog()
    block = decoder_layers(model)[target]
    weight = next(p for n, p in block.named_parameters() if p.dim() == 2 and "mlp" in n)
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * weight.std() * 2)
    stats = probe.compare(model)
    undo.restore()
    local = {s.layer: s.extra["local_error"] for s in stats}
    assert max(local, key=local.get) == target
    assert all(local[i] == 0.0 for i in local if i != target)
    errors = {s.layer: s.rel_error for s in stats}
    assert all(errors[i] == 0.0 for i in errors if i < target) and errors[target] > 0
    assert all(s.rel_error == 0.0 for s in probe.compare(model))  # restored: back to identity


def test_removed_and_inserted_blocks_are_reported():
    model = tiny_llama_model(layers=4)
    probe = LayerProbe.capture(model, windows(), attention=True)
    owner, attr = layer_container(model)
    blocks = list(getattr(owner, attr))
    undo = UndoLog()
    undo.set_attr(owner, attr, torch.nn.ModuleList([blocks[0], blocks[2], copy.deepcopy(blocks[2]), blocks[3]]))
    undo.set_attr(model.config, "num_hidden_layers", 4)
    stats = probe.compare(model, attention=True)
    undo.restore()
    by_name = {s.name: s for s in stats}
    assert by_name["layers.1 (removed)"].extra["removed"] == 1.0
    assert by_name["layers.1 (removed)"].extra["local_error"] > 0
    inserted = [s for s in stats if s.extra.get("inserted")]
    assert len(inserted) == 1 and inserted[0].extra["position"] == 2.0 and inserted[0].layer == 4
    assert "attention_entropy" in inserted[0].extra  # a copied block's own config is switched to eager too
    assert by_name["layers.0"].rel_error == 0.0 and by_name["layers.2"].rel_error > 0
    assert len({s.layer for s in stats}) == len(stats)


def test_attention_entropy_of_uniform_and_one_hot_rows():
    uniform = torch.full((1, 2, 3, 8), 1 / 8)
    total, n = attention_entropy(uniform)
    assert n == 6 and total / n == pytest.approx(math.log(8), rel=1e-5)
    one_hot = torch.zeros(1, 1, 2, 4)
    one_hot[..., 0] = 1
    assert attention_entropy(one_hot)[0] == pytest.approx(0.0, abs=1e-6)


def test_outlier_ratio_detects_a_large_channel():
    peaks = torch.ones(64)
    assert outlier_ratio(peaks) == 1.0
    peaks[5] = 50.0
    assert outlier_ratio(peaks) == 50.0


def test_module_error_names_the_changed_linear_and_only_it(model):
    """Relative output error per linear layer, from the original weights the modification saved."""
    probe = LayerProbe.capture(model, windows())
    target = 1
    block = decoder_layers(model)[target]
    name, weight = next((n, p) for n, p in block.named_parameters() if p.dim() == 2 and "mlp" in n)
    undo = UndoLog()
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * weight.std() * 0.5)
    originals = undo.originals()
    stats = probe.compare(model, originals)
    undo.restore()
    cells = {(s.layer, k): v for s in stats for k, v in s.extra.items() if k.startswith("module_error.")}
    column = "module_error." + name.split(".")[-2]  # e.g. mlp.down_proj.weight -> down_proj
    assert list(cells) == [(target, column)]
    assert 0.2 < cells[(target, column)] < 1.0  # a 0.5-std perturbation: about half the output norm
    restored = {s.layer: s for s in probe.compare(model, originals)}
    assert restored[target].extra[column] == pytest.approx(0.0, abs=1e-6)


def test_module_columns_pool_experts():
    from doctor.metrics.layerwise import module_column

    assert module_column("self_attn.q_proj") == "q_proj"
    assert module_column("block_sparse_moe.experts.3.w2") == "experts.w2"


def _perturb_mlp(model, layer: int, scale: float) -> UndoLog:
    undo = UndoLog()
    block = decoder_layers(model)[layer]
    weight = next(p for n, p in block.named_parameters() if p.dim() == 2 and "mlp" in n)
    undo.save_tensor(weight)
    with torch.no_grad():
        weight.add_(torch.randn_like(weight) * weight.std() * scale)
    return undo


def test_the_probe_rides_on_the_evaluation_pass(model):
    """Hooks on the batched evaluation passes give what the probe's own passes give, on the first 4 windows."""
    from doctor.backends.torch_backend import TorchBackend
    from doctor.metrics.evaluation import baseline_pass, compare_pass

    ids = windows(n=7, seq=24)  # batches of 3: the fourth window is the first row of the second batch
    own = LayerProbe.capture(model, ids, batch_size=3)
    riding = LayerProbe(list(decoder_layers(model)), ids, batch_size=3)
    with riding.recording():
        _, cache = baseline_pass(TorchBackend(model), ids, 128, batch_size=3)
    assert [sum(c.shape[0] for c in chunks) for chunks in riding.outputs] == [4] * len(riding.layers)
    assert [len(chunks) for chunks in riding.inputs] == [1] * len(riding.layers)  # the replayed window
    for a, b in zip(own.outputs, riding.outputs, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert riding.running[0].tokens == 7 * 24  # Block Influence and outliers over every window
    assert all("attention_entropy" not in s.extra for s in riding.baseline_stats())  # no eager pass asked for

    torch.manual_seed(1)
    undo = _perturb_mlp(model, 1, 0.5)
    with riding.comparing(model, undo.originals()) as comparison:
        compare_pass(TorchBackend(model), ids, cache, 128, batch_size=3)
    assert comparison.complete()
    in_pass = comparison.stats()
    standalone = own.compare(model, undo.originals())
    undo.restore()
    for a, b in zip(in_pass, standalone, strict=True):
        assert a.rel_error == pytest.approx(b.rel_error, rel=1e-6, abs=1e-9)
        assert a.extra == pytest.approx(b.extra, rel=1e-6, abs=1e-9)
    assert in_pass[1].rel_error > 0 and in_pass[0].rel_error == 0.0
    assert any(k.startswith("module_error.") for k in in_pass[1].extra)
    assert comparison.timer.seconds > 0  # the probe's own work is timed, to be priced


def test_a_pass_that_never_runs_the_blocks_is_incomplete():
    model = tiny_llama_model(layers=2)
    probe = LayerProbe.capture(model, windows())
    with probe.comparing(model) as comparison:
        pass  # an exported model evaluated elsewhere: the torch blocks never run
    assert not comparison.complete()


def test_module_error_samples_positions_of_long_windows():
    """Long windows: the error of a changed linear is measured at every stride-th position, close to all."""
    from doctor.metrics import layer_comparison

    model = tiny_llama_model(layers=2)
    ids = torch.randint(3, 128, (2, 96), generator=torch.Generator().manual_seed(0))
    probe = LayerProbe.capture(model, ids)
    torch.manual_seed(2)
    undo = _perturb_mlp(model, 0, 0.5)
    every = probe.compare(model, undo.originals())
    tokens, layer_comparison.MODULE_TOKENS = layer_comparison.MODULE_TOKENS, 48  # 2 windows of 96: a stride of 4
    try:
        sampled = probe.compare(model, undo.originals())
    finally:
        layer_comparison.MODULE_TOKENS = tokens
        undo.restore()
    key = next(k for k in every[0].extra if k.startswith("module_error."))
    assert sampled[0].extra[key] != every[0].extra[key]
    assert sampled[0].extra[key] == pytest.approx(every[0].extra[key], rel=0.15)


def test_blocks_are_replayed_on_a_causal_prefix_of_the_window(monkeypatch):
    """The local error from a replay on the first positions is the local error on windows cut to that prefix."""
    from doctor.metrics import layerwise

    model = tiny_llama_model(layers=3)
    ids = torch.randint(3, 128, (2, 96), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(layerwise, "LOCAL_TOKENS", 32)
    long = LayerProbe.capture(model, ids)
    short = LayerProbe.capture(model, ids[:, :32])  # windows of 32: replayed whole
    assert long.prefix and not short.prefix
    assert [chunk.shape[1] for chunk in long.inputs[0]] == [32]
    for i in range(3):  # causal: the prefix forward's block outputs are the full pass's first positions
        torch.testing.assert_close(long.local_targets(i)[0], long.outputs[i][0][:1, :32], rtol=1e-4, atol=1e-5)
    torch.manual_seed(4)
    undo = _perturb_mlp(model, 1, 0.5)
    try:
        replayed = [s.extra["local_error"] for s in long.compare(model, undo.originals())]
        expected = [s.extra["local_error"] for s in short.compare(model, undo.originals())]
    finally:
        undo.restore()
    assert replayed[1] > 0.01 and replayed[0] == replayed[2] == 0.0
    assert replayed == pytest.approx(expected, rel=1e-4, abs=1e-6)
