"""Loading the model under examination and extracting its facts.

Safetensors only unless pickle is explicitly allowed (a pickle checkpoint can run arbitrary code on load);
`trust_remote_code` stays off unless asked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads in seconds; input checks must not wait for it
    import torch

    from doctor.history import History
    from doctor.placement.flags import Placement

from doctor.errors import ModelLoadError
from doctor.model_files import (
    check_config,
    check_finite,
    check_safetensors,
    check_tokenizer,
    hub_cached,
    hub_offline,
    is_hub_id,
)
from doctor.resources import DEMO_MODEL
from doctor.results import ModelFacts

log = logging.getLogger(__name__)

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class Patient:
    """A loaded causal LM with its tokenizer and facts."""

    model: torch.nn.Module
    tokenizer: object
    facts: ModelFacts
    source: str
    local_dir: Path | None = None
    extra: dict = field(default_factory=dict)
    is_demo: bool = False  # the bundled model's weights, wherever they were loaded from (see `is_demo_model`)

    @property
    def device(self) -> torch.device:
        """Where inputs go (for a dispatched model, the input embedding's execution device)."""
        from doctor.placement.offload import execution_device

        return execution_device(self.model)


def resolve_reference(ref: str | None) -> str:
    """`None` and 'demo' mean the bundled model; anything else is a folder or a hub id."""
    if ref is None or ref == "demo":
        return str(DEMO_MODEL)
    return ref


def _check_local(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a model folder (expected a Hugging Face folder with config.json)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json; is this a Hugging Face model folder?")
    check_config(path / "config.json")
    has_safetensors = any(path.glob("*.safetensors"))
    pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if not has_safetensors and pickles and not allow_pickle:
        raise ModelLoadError(
            f"{path}: only pickle checkpoints ({', '.join(sorted(pickles))}); loading them can run arbitrary "
            "code, pass --allow-pickle if you trust them"
        )
    if not has_safetensors and not pickles:
        raise ModelLoadError(f"{path}: no weight files (*.safetensors) found")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    check_tokenizer(path)


def check_reference(ref: str | None, *, allow_pickle: bool = False) -> tuple[str, Path, bool]:
    """(source, path, is local): a local folder's files checked, or a hub id of the shape owner/name.

    Cheap (no torch or transformers), so `examine` runs it before anything slow."""
    source = resolve_reference(ref)
    gguf = gguf_file(source)
    if gguf is not None:  # a known name, a .gguf file or a folder holding one: the file itself is the model
        return source, gguf, True
    path = Path(source).expanduser()
    local = path.exists()
    if local:
        _check_local(path, allow_pickle)
    elif not is_hub_id(source):
        raise ModelLoadError(f"{source}: no such folder (a hub model is named owner/name)")
    elif hub_offline() and not hub_cached(source):
        raise ModelLoadError(f"{source}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    return source, path, local


def weights_sha256(path: Path | None) -> str | None:
    """One SHA-256 over the weight files in name order, for the audit trail."""
    if path is None:
        return None
    files = sorted(p for p in path.iterdir() if p.suffix == ".safetensors" or p.suffix in _PICKLE_SUFFIXES)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest() if files else None


def load_patient(
    ref: str | None,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    placement: Placement | None = None,
) -> Patient:
    """Load a local Hugging Face folder or hub id (the bundled demo model when `ref` is None).

    With a dispatched `placement` (--device-map, --max-memory, --offload-folder) accelerate spreads the weights
    over the devices and offloads the rest; the model is then never moved as a whole."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, path, local = check_reference(ref, allow_pickle=allow_pickle)
    dispatched = placement is not None and placement.dispatched
    if path.is_file() and path.suffix.lower() == ".gguf":
        if dispatched:
            raise ModelLoadError(f"{source}: a GGUF file is dequantized in memory; --device-map, --max-memory and "
                                 "--offload-folder apply to Hugging Face folders")
        return load_gguf_patient(path, source=source, device=device, dtype=dtype)
    import torch

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    offline = not local and hub_offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                                  local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch_dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
            local_files_only=offline,
            **(placement.load_kwargs() if dispatched else {}),
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers, the hub client and safetensors raise many types; all are one line
        raise ModelLoadError(_load_failure(source, exc, offline)) from None
    check_finite(model, source)
    model.eval()
    if not dispatched:
        model.to(device)
    local_dir = path.resolve() if local else None
    demo = is_demo_model(model)
    facts = extract_facts(model, name=_display_name(source, local_dir), weights_dir=local_dir)
    return Patient(model=model, tokenizer=tokenizer, facts=facts, source=source, local_dir=local_dir, is_demo=demo)


_DEMO_CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")


@functools.cache
def _demo_weights() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    config = json.loads((DEMO_MODEL / "config.json").read_text())
    return {k: config[k] for k in _DEMO_CONFIG_KEYS}, load_file(DEMO_MODEL / "model.safetensors")


def is_demo_model(model: torch.nn.Module) -> bool:
    """Whether `model` is the bundled demo model: same configuration and the same weights, tensor for tensor.

    Decided by content, not by the folder it came from, so a copy elsewhere evaluates on the demo's own texts
    under `corpus: auto`. The config comparison makes the weight comparison run only for the tiny demo shape.
    """
    import torch

    from doctor.placement.offload import state_items

    config, weights = _demo_weights()
    if any(getattr(model.config, key, None) != value for key, value in config.items()):
        return False
    state = dict(state_items(model))  # the demo's shape is tiny: offloaded or not, all at once is fine
    return all(
        name in state and state[name].shape == w.shape and torch.equal(state[name].detach().cpu(), w.to(state[name].dtype))
        for name, w in weights.items()
    )


def load_gguf_patient(path: Path, *, source: str, device: str = "cpu", dtype: str = "float32") -> Patient:
    """A GGUF file as the patient: the dequantized model, with the file's facts recorded beside the model's."""
    from doctor.gguf.load import float32_linears, load_gguf
    from doctor.history import detect_history

    loaded = load_gguf(path, dtype=dtype, device=device)
    check_finite(loaded.model, str(path))
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    facts = extract_facts(loaded.model, name=stem, scan_history=False)  # hub GGUFs are named model + type
    facts.weights_sha256 = loaded.facts.sha256
    facts.source_format = "gguf"
    facts.source_file = {**loaded.facts.to_record(), "dequantized": "float32 (exact), cached as safetensors",
                         "cache": str(loaded.folder)}
    meta = loaded.facts.metadata
    identify_family(facts, [("GGUF general.basename", meta.get("basename")), ("GGUF general.name", meta.get("name")),
                            ("GGUF file name", path.name), ("GGUF tokenizer.ggml.pre", meta.get("tokenizer.ggml.pre"))])
    weights = None if dtype == "float32" else float32_linears(loaded)
    record_history(facts, detect_history(loaded.model, loaded.facts.linear_types, weights=weights))
    patient = Patient(model=loaded.model, tokenizer=loaded.tokenizer, facts=facts, source=source,
                      local_dir=loaded.folder)
    patient.extra["gguf"] = loaded.facts
    return patient


def gguf_file(source: str) -> Path | None:
    """A known model name (e.g. smollm2-135m), a .gguf file, or a folder holding one .gguf and no config.json."""
    from doctor.gguf.named import find_gguf, locate_named

    named = locate_named(source)
    return named if named is not None else find_gguf(Path(source).expanduser())


def _load_failure(source: str, exc: Exception, offline: bool) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "trust_remote_code" in text:
        return f"{source}: the model needs its own code from the hub; pass --trust-remote-code if you trust it"
    if offline:
        return f"{source}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set ({first})"
    return f"{source}: cannot load model: {first}"


def _display_name(source: str, local_dir: Path | None) -> str:
    if local_dir is not None and local_dir == DEMO_MODEL.resolve():
        return "stories260k"
    return local_dir.name if local_dir is not None else source


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def extract_facts(model: torch.nn.Module, name: str, weights_dir: Path | None = None,
                  scan_history: bool = True) -> ModelFacts:
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 0)
    facts = ModelFacts(
        id=name,
        architecture=(getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        model_type=getattr(cfg, "model_type", "unknown"),
        params=count_params(model),
        layers=getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0),
        hidden=getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0),
        intermediate=getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None),
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        vocab=cfg.vocab_size,
        context=getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        family=None,
        weights_sha256=weights_sha256(weights_dir),
        revision=getattr(cfg, "_commit_hash", None),  # the hub commit, when loaded from a hub snapshot
    )
    identify_family(facts, [("config.json _name_or_path", _config_name(model, weights_dir)),
                            ("model name", name)])
    if scan_history:
        from doctor.history import detect_history

        record_history(facts, detect_history(model))
    return facts


def _config_name(model: torch.nn.Module, weights_dir: Path | None) -> str | None:
    """The name the checkpoint was saved under (config.json's own `_name_or_path`), else the loaded id."""
    import json

    config = weights_dir / "config.json" if weights_dir is not None else None
    if config is not None and config.is_file():
        try:
            saved = json.loads(config.read_text()).get("_name_or_path")
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved:
            return str(saved)
    loaded = getattr(model.config, "_name_or_path", None)
    return str(loaded) if loaded else None


def identify_family(facts: ModelFacts, named: list[tuple[str, str | None]]) -> None:
    """Family, training tokens and the evidence for them, from names in order of trust (then the vocabulary)."""
    from doctor.predict.families import identify
    from doctor.predict.table import family_fact

    identity = identify(named, facts.vocab)
    if identity is None:
        return
    fact = family_fact(identity.family, identity.name)
    facts.family = identity.family
    facts.family_evidence = identity.evidence
    facts.training_tokens = fact.training_tokens if fact else None


def record_history(facts: ModelFacts, history: History) -> None:
    """The prior-quantization scan, and its dominant grid as the two facts rules and the predictor read."""
    facts.history = history.to_record()
    dominant = history.dominant
    if dominant is not None:
        facts.prior_bits = dominant["bits"]
        facts.prior_group_size = -1 if dominant["group_size"] == "row" else dominant["group_size"]
