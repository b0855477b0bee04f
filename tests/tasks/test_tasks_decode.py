"""`kind: decode` as a modification, composed with compression, and through the examination loop."""

from __future__ import annotations

import json

import pytest

from doctor.errors import ModificationError
from doctor.examination.runner import Options, examine
from doctor.modifications import apply_modification
from doctor.spec.checkup import Suite
from doctor.spec.modification import ComposeSpec, DecodeSpec, QuantizeSpec, flatten
from doctor.spec.suites import load_suite
from tests.conftest import assert_bit_identical, make_context, state_snapshot


def test_decode_touches_no_weights_and_records_the_strategy(tiny_llama, tmp_path):
    before = state_snapshot(tiny_llama.model)
    ctx = make_context(tiny_llama, tmp_path)
    spec = DecodeSpec(strategy="sample", temperature=0.7, top_p=0.9, seed=4)
    applied = apply_modification(spec, ctx)
    assert ctx.state["decode"] == spec and len(ctx.undo) == 0
    assert applied.realized["decode"] == {"strategy": "sample", "temperature": 0.7, "top_k": None, "top_p": 0.9,
                                          "seed": 4}
    assert_bit_identical(tiny_llama.model, before)


def test_compose_quantize_then_decode_restores_exactly(tiny_llama, tmp_path):
    before = state_snapshot(tiny_llama.model)
    ctx = make_context(tiny_llama, tmp_path)
    spec = ComposeSpec(steps=[QuantizeSpec(bits=4, group_size=32), DecodeSpec(strategy="contrastive")])
    applied = apply_modification(spec, ctx)
    assert ctx.state["decode"].strategy == "contrastive"
    assert applied.realized["step1.decode"]["decode"] == {"strategy": "contrastive", "penalty_alpha": 0.6, "top_k": 4}
    ctx.undo.restore()
    assert_bit_identical(tiny_llama.model, before)


def test_two_different_strategies_in_one_checkup_are_refused(tiny_llama, tmp_path):
    ctx = make_context(tiny_llama, tmp_path)
    spec = ComposeSpec(steps=[DecodeSpec(strategy="greedy"), DecodeSpec(strategy="beam")])
    with pytest.raises(ModificationError, match="two decoding strategies"):
        apply_modification(spec, ctx)


def test_the_decoding_suite_covers_every_strategy_and_a_compressed_sampling_checkup():
    suite, _, _ = load_suite("decoding")
    assert all("decoding" in c.tags for c in suite.checkups)
    leaves = {c.id: flatten(c.modification) for c in suite.checkups}
    strategies = {leaf.strategy for steps in leaves.values() for leaf in steps if leaf.kind == "decode"}
    assert strategies == {"greedy", "beam", "sample", "contrastive"}
    assert len({leaf.temperature for s in leaves.values() for leaf in s if getattr(leaf, "strategy", "") == "sample"}) >= 3
    assert any([leaf.kind for leaf in steps] == ["quantize", "decode"] and steps[1].strategy == "sample"
               for steps in leaves.values())
    for checkup in suite.checkups:
        assert {"tasks", "generation"} <= set(checkup.metrics) and checkup.tasks


def test_examination_with_decode_checkups(demo_patient, tmp_path):
    names = tmp_path / "names.jsonl"
    names.write_text("\n".join(json.dumps(x) for x in [
        {"format": "model-doctor-task", "name": "names", "type": "generation", "max_new_tokens": 6},
        {"prompt": "Once upon a time, there was a dog named Max. Max liked to run.", "answer": "Max",
         "regex": r"\b(Max)\b"},
    ]) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"type": "open", "prompt": "Once upon a time, there was a cat."}) + "\n")
    tasks = [str(names), str(prompts)]
    sample = {"kind": "decode", "strategy": "sample", "temperature": 1.0, "seed": 0}
    suite = Suite.model_validate({
        "name": "d", "eval": {"corpus": "tinystories-valid", "max_windows": 1, "bootstrap": 20},
        "checkups": [
            {"id": "greedy", "modification": {"kind": "decode"}, "metrics": ["tasks", "generation"], "tasks": tasks,
             "tags": ["decoding"]},
            {"id": "sample-a", "modification": sample, "metrics": ["tasks", "generation"], "tasks": tasks},
            {"id": "sample-b", "modification": sample, "metrics": ["tasks", "generation"], "tasks": tasks},
            {"id": "rtn4-sample", "modification": {"kind": "compose", "steps": [
                {"kind": "quantize", "bits": 4, "group_size": 32}, sample]},
             "metrics": ["tasks", "generation"], "tasks": tasks},
        ],
    })
    before = state_snapshot(demo_patient.model)
    exam = examine(demo_patient, suite, Options(out_dir=tmp_path / "out", use_predictor=False))
    assert_bit_identical(demo_patient.model, before)
    by_id = {c.id: c for c in exam.checkups}
    assert all(c.status == "ok" for c in exam.checkups), [c.error for c in exam.checkups]
    expected = {"exact_match:names", "repetition_rate", "distinct_1", "distinct_2", "mean_length", "generated_ppl"}
    assert expected <= set(by_id["greedy"].metrics)
    assert by_id["sample-a"].metrics == by_id["sample-b"].metrics  # seeded: identical
    assert by_id["greedy"].realized["decode"]["strategy"] == "greedy"
    assert "exact_match:names" in exam.baseline.metrics
