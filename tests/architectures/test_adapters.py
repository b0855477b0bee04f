"""The adapter registry: lookup by block structure, third-party adapters through entry points, and the generic
fallback whose layout questions are one recorded "unsupported: reason" each while the examination goes on."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from arch_zoo import CONFIGS, tiny_model

import doctor.architectures as architectures
from doctor import plugins
from doctor.architectures import GENERIC, architecture_of
from doctor.architectures.llama import LlamaLike
from doctor.compress.adapters import decoder_layers
from doctor.examination.runner import Options, examine
from doctor.modifications import apply_modification
from doctor.spec.checkup import Suite
from doctor.spec.modification import QuantizeSpec
from tests.conftest import as_patient, make_context

EXPECTED = {"gpt2": "gpt2", "opt": "opt", "llama": "llama", "mistral": "llama", "qwen2": "llama", "gemma2": "llama",
            "phi3": "phi3", "gpt_neox": "gpt_neox", "falcon": "falcon", "mixtral": "moe", "qwen2_moe": "moe",
            "mamba": "mamba", "jamba": "hybrid", "bamba": "hybrid"}


def test_every_family_has_its_adapter():
    assert set(EXPECTED) == set(CONFIGS)
    for arch, name in EXPECTED.items():
        assert architecture_of(decoder_layers(tiny_model(arch))[0]).name == name


@dataclass
class KeepsDown(LlamaLike):
    name: str = "keeps-down"
    kept_linears: dict[str, str] = field(default_factory=lambda: {"mlp.down_proj": "kept by the plugin"})


class FakeEntryPoint:
    name = "keeps-down"
    value = "tests.architectures.test_adapters:KeepsDown"

    def load(self):
        return KeepsDown


def test_a_plugin_adapter_from_an_entry_point_takes_precedence(monkeypatch, tmp_path):
    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEntryPoint()] if
                        group == "model_doctor.architectures" else [])
    architectures.plugins.cache_clear()
    try:
        model = tiny_model("llama")
        assert architecture_of(decoder_layers(model)[0]).name == "keeps-down"
        down = [b.mlp.down_proj.weight.clone() for b in decoder_layers(model)]
        ctx = make_context(as_patient(model, "llama"), tmp_path, samples=2, seq_len=16)
        applied = apply_modification(QuantizeSpec(method="rtn", bits=3), ctx)
        assert applied.realized["kept"] == ["mlp.down_proj: kept by the plugin"]
        assert applied.realized["coverage"] == 1.0
        assert all(torch.equal(b.mlp.down_proj.weight, d) for b, d in zip(decoder_layers(model), down, strict=True))
        ctx.undo.restore()
    finally:
        architectures.plugins.cache_clear()


def test_a_broken_plugin_is_skipped(monkeypatch):
    class Broken:
        name = "broken"
        value = "missing:Adapter"

        def load(self):
            raise ImportError("no such module")

    monkeypatch.setattr(plugins, "entry_points", lambda group: [Broken()])
    architectures.plugins.cache_clear()
    try:
        assert architecture_of(decoder_layers(tiny_model("llama"))[0]).name == "llama"
    finally:
        architectures.plugins.cache_clear()


UNKNOWN_LAYOUT = [
    ("rtn", {"kind": "quantize", "method": "rtn", "bits": 4}),
    ("awq", {"kind": "quantize", "method": "awq", "bits": 4}),
    ("heads", {"kind": "prune", "method": "magnitude", "structure": "heads", "sparsity": 0.25}),
    ("channels", {"kind": "prune", "method": "magnitude", "structure": "channels", "sparsity": 0.25}),
    ("identity", {"kind": "expand_layers", "count": 1, "init": "identity"}),
    ("copy", {"kind": "expand_layers", "count": 1, "init": "copy"}),
]


def test_an_unknown_layout_is_one_unsupported_result_per_checkup(monkeypatch, tmp_path):
    monkeypatch.setattr(architectures, "BUILTIN", tuple(a for a in architectures.BUILTIN
                                                        if not isinstance(a, LlamaLike)))
    model = tiny_model("llama")
    assert architecture_of(decoder_layers(model)[0]) is GENERIC
    suite = Suite.model_validate({
        "name": "unknown-layout", "eval": {"corpus": "auto", "max_windows": 1, "bootstrap": 0, "seq_len": 32},
        "calibration": {"corpus": "auto", "samples": 2, "seq_len": 32},
        "checkups": [{"id": i, "modification": m, "metrics": ["perplexity"]} for i, m in UNKNOWN_LAYOUT],
    })
    exam = examine(as_patient(model, "unknown"), suite, Options(out_dir=tmp_path, use_predictor=False))
    by_id = {c.id: c for c in exam.checkups}
    assert by_id["rtn"].status == "ok" and by_id["rtn"].realized["coverage"] == 1.0  # every linear, generically
    assert by_id["copy"].status == "ok"
    for name in ("awq", "heads", "channels", "identity"):
        assert by_id[name].status == "error"
        assert by_id[name].error.startswith("unsupported: ") and "generic" in by_id[name].error


@pytest.mark.parametrize("arch", ["opt", "phi3", "gpt_neox", "qwen2_moe", "gemma2", "jamba", "bamba"])
def test_heads_without_contribution_are_removed_first(arch, tmp_path):
    """Row maps of fused and separate projections: silencing one KV group by the map and removing it keeps
    the logits, so the map agrees with how the attention really splits its rows."""
    from doctor.spec.modification import PruneSpec

    model = tiny_model(arch)
    patient = as_patient(model, arch)
    attention_layers = [b for b in decoder_layers(model) if architecture_of(b).has_heads(b)]
    for i, block in enumerate(attention_layers):  # silence KV group i % kv in attention layer i, by the row maps
        a = architecture_of(block).attention(block)
        g, per = i % a.kv_heads, a.heads // a.kv_heads
        with torch.no_grad():
            for attr, (q_of, kv_of) in a.inputs.items():
                w = getattr(a.module, attr).weight
                w[(q_of // per == g) | (kv_of == g)] = 0
            getattr(a.module, a.out).weight[:, g * per * a.head_dim:(g + 1) * per * a.head_dim] = 0
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(input_ids=ids, use_cache=False).logits
    kv = architecture_of(attention_layers[0]).attention(attention_layers[0]).kv_heads
    ctx = make_context(patient, tmp_path, samples=2, seq_len=16)
    applied = apply_modification(PruneSpec(structure="heads", method="magnitude", sparsity=1 / kv), ctx)
    assert applied.realized["kv_heads_removed_per_layer"] == [1] * len(attention_layers)
    with torch.no_grad():
        assert (model(input_ids=ids, use_cache=False).logits - base).abs().max() < 1e-5
    ctx.undo.restore()
