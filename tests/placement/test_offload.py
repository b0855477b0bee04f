"""A model larger than the memory it is given: loaded with accelerate's device map, most layers on disk,
calibrated one decoder layer at a time, measured exactly as in memory, restored to its original storage."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from doctor.examination.runner import Options, examine
from doctor.patient import load_patient
from doctor.placement import offload
from doctor.placement.check import placement_facts
from doctor.placement.flags import Placement
from doctor.resources import DEMO_MODEL
from doctor.spec.checkup import Suite

SUITE = {
    "name": "offload",
    "eval": {"corpus": "tinystories-valid", "seq_len": 128, "max_windows": 3, "bootstrap": 0},
    "calibration": {"corpus": "tinystories-calib", "samples": 4, "seq_len": 128},
    "checkups": [
        {"id": "gptq4", "modification": {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32},
         "metrics": ["perplexity", "kl", "layer_error"]},
        {"id": "heads", "modification": {"kind": "prune", "structure": "heads", "sparsity": 0.25}},
        {"id": "wanda50", "modification": {"kind": "prune", "method": "wanda", "sparsity": 0.5}},
        {"id": "rtn4", "modification": {"kind": "quantize", "bits": 4, "group_size": 32}},
        {"id": "mag24", "modification": {"kind": "prune", "structure": "nm", "n": 2, "m": 4}},
    ],
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A random 6-layer Llama (hidden 128, 4 MB of float32 weights) saved with safetensors, with the demo's
    tokenizer (same 512-token vocabulary)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_MODEL / name, folder / name)
    return folder


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ppl(exam) -> dict[str, float | None]:
    values = {"baseline": exam.baseline.metrics["ppl"].value}
    values.update({c.id: c.metrics["ppl"].value if c.status == "ok" else None for c in exam.checkups})
    return values


def test_offloaded_examination_equals_in_memory_run(tiny_dir, tmp_path):
    suite = Suite.model_validate(SUITE)
    in_memory = examine(load_patient(str(tiny_dir)), suite, Options(out_dir=tmp_path / "mem", use_predictor=False))

    weights = tiny_dir / "model.safetensors"
    before = _sha(weights)
    placement = Placement("auto", {"cpu": 2_000_000}, tmp_path / "offload")  # 2 MB of 4: one layer stays in memory
    patient = load_patient(str(tiny_dir), placement=placement)
    placed = set(patient.model.hf_device_map.values())
    assert "disk" in placed, patient.model.hf_device_map
    offload.reset_peak()
    offloaded = examine(patient, suite, Options(out_dir=tmp_path / "disk", use_predictor=False))

    assert offload.peak_materialized() == 1  # block by block: never two offloaded layers on at once
    facts = placement_facts(patient, placement, None)  # what `doctor examine` adds to the baseline's health
    assert facts["decoder_layers_on"] == "cpu 1, disk 5" and facts["placement"].startswith("device_map=auto")
    mem, disk = _ppl(in_memory), _ppl(offloaded)
    assert None not in (mem["gptq4"], mem["wanda50"], mem["rtn4"], mem["mag24"])
    assert len({mem["baseline"], mem["gptq4"], mem["wanda50"], mem["rtn4"], mem["mag24"]}) == 5
    for key in ("baseline", "gptq4", "wanda50", "rtn4", "mag24"):
        assert disk[key] == pytest.approx(mem[key], rel=1e-5), key
    by_id = {c.id: c for c in offloaded.checkups}
    assert by_id["gptq4"].realized["coverage"] == 1.0 and by_id["wanda50"].realized["sparsity"] == pytest.approx(0.5)
    layer_keys = [k for k in in_memory.checkups[0].metrics if k.startswith("layer")]
    for key in ("layer_error_max", "layer_error_mean"):  # block errors: measured as in memory
        assert by_id["gptq4"].metrics[key].value == pytest.approx(in_memory.checkups[0].metrics[key].value, rel=1e-5)
    assert layer_keys and all("block errors only" in (by_id["gptq4"].metrics[k].note or "") for k in layer_keys
                              if k != "layer_probe_passes")
    assert by_id["rtn4"].realized["max_levels_per_group"] <= 16 and by_id["mag24"].realized["sparsity"] == 0.5
    # structured pruning reshapes modules whose weights are not in memory: a loud, recorded refusal
    assert by_id["heads"].status == "error" and "offloaded layers" in by_id["heads"].error
    # restored to the original storage: the hooks read the checkpoint again, which was never written
    assert not any(isinstance(e.hook.weights_map, offload.Overlay) for e in offload.offloaded_modules(patient.model))
    assert _sha(weights) == before
    ids = torch.randint(0, 512, (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(patient.model(input_ids=ids).logits, load_patient(str(tiny_dir)).model(input_ids=ids).logits)


def test_cpu_offloaded_weights_are_rewritten_in_memory_and_restored(tiny_llama, tmp_path):
    """Weights kept in a CPU state dict (a GPU examination's CPU offload): written back as new CPU tensors, never
    into the state dict's own, and the state dict is the original after each checkup."""
    from accelerate import cpu_offload

    suite = Suite.model_validate({**SUITE, "eval": {**SUITE["eval"], "corpus": "tinystories-valid", "max_windows": 2},
                                  "checkups": [SUITE["checkups"][0], SUITE["checkups"][3]]})
    reference = examine(tiny_llama, suite, Options(out_dir=tmp_path / "mem", use_predictor=False))
    state = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    cpu_offload(tiny_llama.model, execution_device=torch.device("cpu"), state_dict=state)
    held = {k: v.clone() for k, v in state.items()}
    entries = offload.offloaded_modules(tiny_llama.model)
    assert entries and all(not offload._on_disk(e.hook, "weight") for e in entries if "weight" in e.tensor_names())
    offloaded = examine(tiny_llama, suite, Options(out_dir=tmp_path / "cpu", use_predictor=False))
    assert _ppl(offloaded) == _ppl(reference)
    assert all(torch.equal(state[k], held[k]) for k in held)
