"""Mixture-of-experts: every expert's matrices (stored fused as 3-D parameters) are quantized and pruned, each
expert calibrated on the tokens the router sends to it, with the stated fallback for experts that see too few."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import tiny_model

from doctor.compress.adapters import decoder_layers
from doctor.compress.collectors import HessianCollector
from doctor.compress.quantizer import quantize_rtn
from doctor.compress.sequential import in_features, run_sequential
from doctor.errors import ModificationError
from doctor.modifications import apply_modification
from doctor.modifications.base import UndoLog
from doctor.modifications.coverage import prepare_targets
from doctor.spec.modification import PruneSpec, QuantizeSpec
from tests.conftest import as_patient, make_context

SPECS = [
    QuantizeSpec(method="rtn", bits=4, group_size=32),
    QuantizeSpec(method="gptq", bits=4, group_size=32),
    PruneSpec(method="wanda", sparsity=0.5),
    PruneSpec(method="sparsegpt", structure="nm", n=2, m=4),
]


def _fused(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b.mlp.experts.gate_up_proj.detach().clone(), b.mlp.experts.down_proj.detach().clone())
            for b in decoder_layers(model)]


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.method}")
def test_every_expert_is_changed_and_restored(arch, spec, tmp_path):
    model = tiny_model(arch)
    fused_modules = [b.mlp.experts for b in decoder_layers(model)]
    originals = _fused(model)
    ctx = make_context(as_patient(model, arch), tmp_path, samples=4, seq_len=32)
    applied = apply_modification(spec, ctx)
    experts = applied.realized["coverage_by_type"]["experts"]
    assert experts["touched"] == experts["target"] == sum(g.numel() + d.numel() for g, d in originals)
    assert applied.realized["coverage"] == 1.0
    for block, (gate_up, down) in zip(decoder_layers(model), originals, strict=True):
        split = block.mlp.experts
        assert len(split) == gate_up.shape[0]
        for e, expert in enumerate(split):
            assert not torch.equal(expert.gate_up_proj.weight, gate_up[e]), f"expert {e} gate_up unchanged"
            assert not torch.equal(expert.down_proj.weight, down[e]), f"expert {e} down unchanged"
    ctx.undo.restore()
    for block, module, (gate_up, down) in zip(decoder_layers(model), fused_modules, originals, strict=True):
        assert block.mlp.experts is module
        assert torch.equal(module.gate_up_proj, gate_up) and torch.equal(module.down_proj, down)


def _routed_inputs(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's expert inputs and router choices, from the original fused model."""
    block = decoder_layers(model)[0]
    seen = {}

    def inputs(_m, args) -> None:
        seen["x"] = args[0].detach()

    def choices(_m, _args, out) -> None:
        seen["idx"] = out[2].detach()

    hooks = [block.mlp.experts.register_forward_pre_hook(inputs), block.mlp.gate.register_forward_hook(choices)]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in hooks:
        h.remove()
    return seen["x"], seen["idx"]


def _hessian(x: torch.Tensor) -> torch.Tensor:
    return 2 * x.T.double() @ x.double() / x.shape[0]


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_each_expert_is_calibrated_on_its_own_routed_tokens(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    x, idx = _routed_inputs(model, ids)
    gate_up, down = _fused(model)[0]
    act = decoder_layers(model)[0].mlp.experts.act_fn
    undo = UndoLog()
    prepare_targets(model, undo)
    recorded = {}

    def record(job):
        if job.layer_index == 0:
            recorded.update({n: c.H.clone() for n, c in job.stats.items()})
        return {}

    run_sequential(model, ids, record, undo=undo,
                   make_collector=lambda _n, m: HessianCollector(in_features(m), m.weight.device))
    for e in range(gate_up.shape[0]):
        routed = x[(idx == e).any(-1)]  # (tokens, hidden) the router sent to expert e
        assert routed.shape[0] > 0
        g, u = (routed @ gate_up[e].T).chunk(2, dim=-1)
        inner = act(g) * u  # down_proj's input for those tokens
        for name, inputs in ((f"mlp.experts.{e}.gate_up_proj", routed), (f"mlp.experts.{e}.down_proj", inner)):
            torch.testing.assert_close(recorded[name].double(), _hessian(inputs), rtol=1e-4, atol=1e-6)
    undo.restore()


def _divert(model, expert: int) -> None:
    """Make the router never pick `expert` (its slot goes to expert 1, or 2 where 1 is already chosen)."""
    def hook(_m, _args, out):
        logits, weights, idx = out
        other = torch.where((idx == 1).any(-1, keepdim=True), 2, 1)
        return logits, weights, torch.where(idx == expert, other, idx)

    for block in decoder_layers(model):
        block.mlp.gate.register_forward_hook(hook)


def test_an_expert_without_tokens_falls_back_to_uniform_statistics(tmp_path):
    """GPTQ on uniform statistics is round-to-nearest: the starved expert is quantized, and the report says so."""
    model = tiny_model("mixtral")
    _divert(model, 3)
    originals = _fused(model)
    ctx = make_context(as_patient(model, "mixtral"), tmp_path, samples=4, seq_len=32)
    applied = apply_modification(QuantizeSpec(method="gptq", bits=4, group_size=32), ctx)
    assert applied.realized["coverage"] == 1.0
    assert applied.realized["uniform_fallback_linears"] == 2 * len(originals)  # gate_up and down of expert 3
    for block, (gate_up, down) in zip(decoder_layers(model), originals, strict=True):
        starved = block.mlp.experts[3]
        torch.testing.assert_close(starved.gate_up_proj.weight, quantize_rtn(gate_up[3], 4, 32, False))
        torch.testing.assert_close(starved.down_proj.weight, quantize_rtn(down[3], 4, 32, False))
    ctx.undo.restore()


def test_a_method_that_skips_experts_is_an_error(tmp_path, monkeypatch):
    """The original failure: attention quantized, experts untouched, report claiming 4 bits. Now an error."""
    from doctor.modifications import quantize

    real = quantize.block_linears
    monkeypatch.setattr(quantize, "block_linears",
                        lambda block: {n: m for n, m in real(block).items() if ".experts." not in n})
    ctx = make_context(as_patient(tiny_model("mixtral"), "mixtral"), tmp_path, samples=2, seq_len=16)
    with pytest.raises(ModificationError, match=r"quantize rtn touched .* target weights \(experts 0 of "):
        apply_modification(QuantizeSpec(method="rtn", bits=4), ctx)
    ctx.undo.restore()
