"""A GGUF file as the patient: the dequantized model, with the file's facts recorded beside the model's."""

from __future__ import annotations

from pathlib import Path

import torch

from doctor.gguf.load import LoadedGGUF, load_gguf
from doctor.history import detect_history, linear_weights
from doctor.model_files import check_finite
from doctor.patient import Patient, extract_facts, identify_family, record_history


def display_name(path: Path) -> str:
    """The file name without its extension: hub GGUFs are named for the model and the quantization type."""
    return path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name


def _float32_weights(loaded: LoadedGGUF) -> list[tuple[str, torch.Tensor]]:
    """The cached float32 linears: a grid is only recognisable before half precision rounds it."""
    from safetensors import safe_open

    pairs = linear_weights(loaded.model)
    with safe_open(str(loaded.folder / "model.safetensors"), framework="pt") as fh:
        stored = set(fh.keys())
        return [(name, fh.get_tensor(f"{name}.weight") if f"{name}.weight" in stored else w.float())
                for name, w in pairs]


def load_gguf_patient(path: Path, *, source: str, device: str = "cpu", dtype: str = "float32") -> Patient:
    loaded = load_gguf(path, dtype=dtype, device=device)
    check_finite(loaded.model, str(path))
    facts = extract_facts(loaded.model, name=display_name(path), scan_history=False)
    facts.weights_sha256 = loaded.facts.sha256
    facts.source_format = "gguf"
    facts.source_file = {**loaded.facts.to_record(), "dequantized": "float32 (exact), cached as safetensors",
                         "cache": str(loaded.folder)}
    meta = loaded.facts.metadata
    identify_family(facts, [("GGUF general.basename", meta.get("basename")), ("GGUF general.name", meta.get("name")),
                            ("GGUF file name", path.name), ("GGUF tokenizer.ggml.pre", meta.get("tokenizer.ggml.pre"))])
    weights = None if dtype == "float32" else _float32_weights(loaded)
    record_history(facts, detect_history(loaded.model, loaded.facts.linear_types, weights=weights))
    patient = Patient(model=loaded.model, tokenizer=loaded.tokenizer, facts=facts, source=source,
                      local_dir=loaded.folder)
    patient.extra["gguf"] = loaded.facts
    return patient
