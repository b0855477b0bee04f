"""Layer-input capture, hooks, collectors and the sequential layer loop."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_gpt2_model, tiny_llama_model

from doctor.compress.adapters import block_linears, decoder_layers, linear_weight, sequential_groups
from doctor.compress.capture import capture_layer_inputs, layer_output
from doctor.compress.collectors import (
    ActivationMagnitudeCollector,
    HessianCollector,
    InputCollector,
    InputNormCollector,
)
from doctor.compress.hooks import forward_hooks
from doctor.compress.quantizer import quantize_rtn
from doctor.compress.sequential import collect, in_features, run_sequential
from doctor.data.calibration import CalibrationProvider
from doctor.modifications.base import UndoLog
from doctor.spec.modification import CalibrationSpec


def _windows(samples: int = 5, seq_len: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, 120, (samples, seq_len), generator=gen)


def _final_norm(model: torch.nn.Module) -> torch.nn.Module:
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def _hook_count(model: torch.nn.Module) -> int:
    # transformers registers its own output-capturing hooks, so tests compare counts before and after
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("make_model", [tiny_llama_model, tiny_gpt2_model])
def test_layer_by_layer_replay_equals_full_forward(make_model) -> None:
    model = make_model()
    windows = _windows()
    hooks_before = _hook_count(model)
    # 32 tokens per batch: batches of 2, 2 and 1 windows, so two batch sizes are recorded
    inputs = capture_layer_inputs(model, windows, batch_tokens=32)
    assert sorted(inputs.kwargs) == [1, 2] and inputs.tokens == windows.numel()
    assert _hook_count(model) == hooks_before
    with torch.no_grad():
        hidden = model(windows, output_hidden_states=True).hidden_states
    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        outputs = torch.cat(inputs.run(layer))
        expected = hidden[i + 1]
        if i == len(layers) - 1:  # the last entry has the final norm applied
            outputs = _final_norm(model)(outputs)
        torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-5)
        inputs = inputs.with_hidden(inputs.run(layer))


def test_captured_arguments_equal_those_of_a_manual_forward() -> None:
    model = tiny_llama_model()
    windows = _windows(samples=2)
    inputs = capture_layer_inputs(model, windows, batch_tokens=10_000)
    seen = {}

    def spy(_module, args, kwargs):
        seen.update(args=args, kwargs=kwargs)

    with torch.no_grad(), forward_hooks([(decoder_layers(model)[0], spy)], pre=True, with_kwargs=True):
        model(windows, use_cache=False)
    torch.testing.assert_close(inputs.hidden[0], seen["args"][0], rtol=0, atol=0)
    recorded = inputs.kwargs[2]
    assert recorded.keys() == seen["kwargs"].keys()
    for key, value in seen["kwargs"].items():
        if isinstance(value, torch.Tensor | tuple):
            torch.testing.assert_close(recorded[key], value, rtol=0, atol=0)
        else:
            assert recorded[key] == value, key


def test_layer_output_normalises_tuples() -> None:
    t = torch.ones(2, 3)
    assert layer_output(t) is t
    assert layer_output((t, None)) is t
    with pytest.raises(TypeError):
        layer_output({"h": t})


def test_hooks_removed_when_the_block_raises() -> None:
    layer = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError), forward_hooks([(layer, lambda m, a, o: None)]):
        assert layer._forward_hooks
        raise ValueError("boom")
    assert not layer._forward_hooks


class _FailingCollector(HessianCollector):
    def add(self, x):
        raise RuntimeError("collector failed")


@pytest.mark.parametrize("where", ["solver", "collector"])
def test_hooks_gone_and_weights_restorable_after_a_failure(where) -> None:
    model = tiny_llama_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    undo = UndoLog()
    hooks_before = _hook_count(model)

    def solver(job):
        if job.layer_index == 1 and where == "solver":
            raise RuntimeError("solver failed")
        return {n: torch.zeros_like(job.weight(n)) for n in job.names}

    def make(name, module):
        fails = where == "collector" and module is decoder_layers(model)[1].mlp.up_proj
        return (_FailingCollector if fails else HessianCollector)(in_features(module))

    with pytest.raises(RuntimeError, match=f"{where} failed"):
        run_sequential(model, _windows(), solver, undo=undo, make_collector=make)
    assert _hook_count(model) == hooks_before
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, before["model.layers.0.self_attn.q_proj.weight"])
    undo.restore()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def _hessian(_name, module):
    return HessianCollector(in_features(module))


def _rtn_solver(job):
    return {n: quantize_rtn(job.weight(n), 2, 16, False) for n in job.names}


@pytest.mark.parametrize("make_model", [tiny_llama_model, tiny_gpt2_model])
def test_each_linear_is_calibrated_on_inputs_of_the_modified_model(make_model) -> None:
    """True-sequential: what each linear saw equals its input in the final modified model, not the original."""
    model = make_model()
    windows = _windows()
    seen: dict[str, InputCollector] = {}

    def solver(job):
        seen.update({f"{id(job.modules[n])}": job.stats[n] for n in job.names})
        return _rtn_solver(job)

    def keep(name, module):
        return InputCollector(in_features(module))

    original = _linear_inputs(model, windows)
    run_sequential(model, windows, solver, undo=UndoLog(), make_collector=keep, batch_tokens=32)
    final = _linear_inputs(model, windows)
    changed = 0
    for key, collector in seen.items():
        torch.testing.assert_close(collector.inputs, final[key], rtol=1e-5, atol=1e-5)
        changed += not torch.allclose(collector.inputs, original[key], atol=1e-4)
    untouched = len(sequential_groups(decoder_layers(model)[0])[0])
    assert changed == len(seen) - untouched  # only layer 0's first group sees the original inputs


def _linear_inputs(model, windows) -> dict[str, torch.Tensor]:
    chunks: dict[str, list[torch.Tensor]] = {}

    def hook_for(key):
        def hook(_m, args):
            chunks.setdefault(key, []).append(args[0].reshape(-1, args[0].shape[-1]).float())

        return hook

    modules = [m for layer in decoder_layers(model) for m in block_linears(layer).values()]
    with torch.no_grad(), forward_hooks([(m, hook_for(f"{id(m)}")) for m in modules], pre=True):
        for batch in torch.split(windows, 2):
            model(batch, use_cache=False)
    return {k: torch.cat(v) for k, v in chunks.items()}


def test_hessian_and_hook_errors_agree() -> None:
    windows = _windows()
    by_hessian = run_sequential(tiny_llama_model(), windows, _rtn_solver, undo=UndoLog(), make_collector=_hessian)
    by_hooks = run_sequential(
        tiny_llama_model(), windows, _rtn_solver, undo=UndoLog(), make_collector=lambda n, m: None
    )
    for a, b in zip(by_hessian, by_hooks, strict=True):
        assert a.rel_error > 0
        assert a.rel_error == pytest.approx(b.rel_error, rel=1e-3)
        for name in block_linears(decoder_layers(tiny_llama_model())[0]):
            assert a.extra[name] == pytest.approx(b.extra[name], rel=1e-3)


def test_identity_solver_reports_zero_error_and_changes_nothing() -> None:
    model = tiny_llama_model()
    windows = _windows()
    with torch.no_grad():
        before = model(windows).logits
    stats = run_sequential(
        model, windows, lambda job: {n: job.weight(n) for n in job.names}, undo=UndoLog(), make_collector=_hessian
    )
    assert [s.layer for s in stats] == [0, 1]
    assert all(s.rel_error == 0 and s.seconds > 0 for s in stats)
    with torch.no_grad():
        torch.testing.assert_close(model(windows).logits, before, rtol=0, atol=0)


def test_collectors_match_direct_formulas() -> None:
    gen = torch.Generator().manual_seed(1)
    parts = [torch.randn(3, 7, 6, generator=gen), torch.randn(1, 5, 6, generator=gen) * 3]
    x = torch.cat([p.reshape(-1, 6) for p in parts])
    h, norm, mag, raw = HessianCollector(6), InputNormCollector(6), ActivationMagnitudeCollector(6), InputCollector(6)
    for part in parts:
        for c in (h, norm, mag, raw):
            c.add(part)
    assert h.tokens == norm.tokens == x.shape[0]
    torch.testing.assert_close(h.H, 2 * x.t() @ x / x.shape[0])
    torch.testing.assert_close(norm.norm, x.norm(dim=0))
    torch.testing.assert_close(mag.mean_abs, x.abs().mean(0))
    torch.testing.assert_close(raw.inputs, x)
    with pytest.raises(ValueError, match="features"):
        h.add(torch.zeros(2, 5))


def test_calibration_windows_deterministic_for_a_seed(tiny_llama) -> None:
    def draw(seed):
        spec = CalibrationSpec(corpus="tinystories-calib", samples=4, seq_len=32, seed=seed)
        return CalibrationProvider(tiny_llama, spec, default_seq_len=32)(None)

    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a.windows, b.windows) and a.info.ids_sha256 == b.info.ids_sha256
    assert not torch.equal(a.windows, c.windows) and a.info.ids_sha256 != c.info.ids_sha256
    assert a.windows.shape == (4, 32) and a.info.seed == 0


def test_rtn_weights_through_sequential_are_written_in_module_layout() -> None:
    model = tiny_gpt2_model()
    undo = UndoLog()
    run_sequential(model, _windows(), _rtn_solver, undo=undo, make_collector=_hessian)
    for layer in decoder_layers(model):
        for module in block_linears(layer).values():
            w = linear_weight(module)
            assert len(w[0, :16].unique()) <= 4  # 2 bits, first group of the first row


def test_linears_reading_one_tensor_share_a_collector() -> None:
    model = tiny_llama_model()
    layer = decoder_layers(model)[0]
    inputs = capture_layer_inputs(model, _windows(), batch_tokens=32)
    linears = block_linears(layer)
    stats = collect(layer, inputs, linears, _hessian)
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"] is stats["self_attn.v_proj"]
    assert stats["mlp.gate_proj"] is stats["mlp.up_proj"]
    distinct = {id(c) for c in stats.values()}
    assert len(distinct) == 4 and all(c.tokens == inputs.tokens for c in stats.values())


def test_strided_hook_error_estimates_the_full_error() -> None:
    windows = _windows()
    full = run_sequential(tiny_llama_model(), windows, _rtn_solver, undo=UndoLog(), make_collector=lambda n, m: None)
    thin = run_sequential(
        tiny_llama_model(), windows, _rtn_solver, undo=UndoLog(), make_collector=lambda n, m: None, error_stride=8
    )
    for a, b in zip(full, thin, strict=True):
        assert b.rel_error == pytest.approx(a.rel_error, rel=0.25)
        assert b.rel_error != a.rel_error
