"""Loading the patient: `doctor examine` and `doctor examine demo` examine the same bundled model."""

from __future__ import annotations

from doctor.patient import load_patient
from doctor.resources import DEMO_MODEL
from tests.conftest import state_snapshot


def test_demo_name_loads_the_same_model_as_no_name(demo_patient):
    named = load_patient("demo")
    assert named.source == demo_patient.source == str(DEMO_MODEL)
    assert named.is_demo and demo_patient.is_demo
    assert named.facts == demo_patient.facts
    assert named.facts.id == "stories260k" and named.facts.weights_sha256
    before, after = state_snapshot(named.model), state_snapshot(demo_patient.model)
    assert before.keys() == after.keys() and all(before[k].equal(after[k]) for k in before)


def test_demo_facts_match_the_model_card(demo_patient):
    f = demo_patient.facts
    assert (f.context, f.intermediate, f.kv_heads < f.heads, f.tied_embeddings) == (512, 172, True, True)
    assert demo_patient.tokenizer.bos_token_id == 1


def test_demo_identity_is_decided_by_weights_not_by_folder(tmp_path, tiny_llama):
    import shutil

    import torch

    from doctor.data.texts import resolve_corpus
    from doctor.patient import is_demo_model

    copy = tmp_path / "somewhere-else"
    shutil.copytree(DEMO_MODEL, copy)
    patient = load_patient(str(copy))
    assert patient.is_demo  # so `corpus: auto` still means the demo's TinyStories texts, not WikiText-2
    assert resolve_corpus("auto", demo=patient.is_demo, purpose="eval").name.startswith("tinystories")
    with torch.no_grad():
        patient.model.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    assert not is_demo_model(patient.model)
    assert not tiny_llama.is_demo and not is_demo_model(tiny_llama.model)
