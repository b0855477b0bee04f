"""A ready-made compressed artifact judged against its original: format detection, reading, and the checks that
make the comparison meaningful (same tokenizer, same tensor names and shapes, every weight accounted for)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from doctor.artifacts import checkpoint, gguf_file
from doctor.errors import ModelLoadError
from doctor.patient import weights_sha256

FORMATS = ("gguf", "gptq", "awq", "compressed-tensors", "safetensors")
"""What `format:` accepts besides `auto`."""

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass
class Candidate:
    """Float weights by parameter name, and what the file says about itself."""

    path: Path
    format: str
    weights: dict[str, torch.Tensor]
    file_bytes: int
    facts: dict = field(default_factory=dict)


def detect_format(path: Path) -> tuple[str, Path]:
    """The format of a file or folder, and the file or folder to read."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such candidate file or folder")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", path
        raise ModelLoadError(f"{path}: unsupported candidate file; supported: {_supported()}")
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1 and not any(path.glob("*.safetensors")):
        return "gguf", ggufs[0]
    if len(ggufs) > 1:
        raise ModelLoadError(f"{path}: {len(ggufs)} GGUF files; name the one to judge")
    method = str(checkpoint.read_quantization_config(path).get("quant_method", "")).lower().replace("_", "-")
    if method in ("gptq", "awq", "compressed-tensors"):
        return method, path
    if method:
        raise ModelLoadError(f"{path}: quant_method '{method}' is not supported; supported: {_supported()}")
    if any(path.glob("*.safetensors")):
        return "safetensors", path
    raise ModelLoadError(f"{path}: no GGUF or safetensors weights; supported: {_supported()}")


def _supported() -> str:
    return ("GGUF files, GPTQ and AWQ (GEMM) packed checkpoints, compressed-tensors checkpoints, "
            "plain safetensors folders")


def load_candidate(path: Path, requested: str, patient) -> Candidate:
    """Read `path` as the patient's architecture; refuse a different tokenizer or tensor shapes."""
    fmt, target = detect_format(path)
    if requested not in ("auto", fmt):
        raise ModelLoadError(f"{path}: format '{requested}' was asked for, but the file is {fmt}")
    facts: dict = {}
    if fmt == "gguf":
        from doctor.gguf.facts import read_facts

        weights = gguf_file.read_gguf(target, patient.model)
        file_facts = read_facts(target)
        facts.update(tensor_types=file_facts.type_share, sha256=file_facts.sha256, name=file_facts.name)
        _check_tokens(path, gguf_file.token_list(target), patient.tokenizer)
        size = target.stat().st_size
    else:
        qconfig = checkpoint.read_quantization_config(target)
        if fmt == "compressed-tensors":
            from doctor.artifacts.compressed import read_compressed

            weights = read_compressed(target)
        else:
            weights = checkpoint.read_folder(target, "plain" if fmt == "safetensors" else fmt, qconfig)
        facts["quantization_config"] = {k: v for k, v in qconfig.items() if isinstance(v, (int, float, str, bool))}
        facts["sha256"] = weights_sha256(target)
        _check_folder_tokenizer(target, patient.tokenizer)
        size = sum(p.stat().st_size for p in checkpoint.safetensor_files(target))
    _check_shapes(path, weights, patient.model)
    return Candidate(path=path, format=fmt, weights=weights, file_bytes=size, facts=facts)


def check_tokenizer(path: Path, patient) -> None:
    """Refuse a candidate whose vocabulary differs from the original's (read from metadata: no weights loaded)."""
    fmt, target = detect_format(path)
    if fmt == "gguf":
        _check_tokens(path, gguf_file.token_list(target), patient.tokenizer)
    else:
        _check_folder_tokenizer(target, patient.tokenizer)


def _check_tokens(path: Path, tokens: list[str] | None, tokenizer) -> None:
    if tokens is None:
        return
    original = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if tokens != original:
        differ = next((i for i, (a, b) in enumerate(zip(tokens, original, strict=False)) if a != b), min(len(tokens), len(original)))
        raise ModelLoadError(
            f"{path}: tokenizer differs from the original's ({len(tokens)} vs {len(original)} tokens, "
            f"first difference at id {differ})"
        )


def _check_folder_tokenizer(folder: Path, tokenizer) -> None:
    if not (folder / "tokenizer.json").is_file():
        return  # packed checkpoints often ship without one: the original's is used
    from transformers import AutoTokenizer

    try:
        theirs = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder}: unreadable tokenizer ({exc})") from None
    _check_tokens(folder, theirs.convert_ids_to_tokens(list(range(len(theirs)))), tokenizer)


def _check_shapes(path: Path, weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    params = dict(model.named_parameters())
    unknown = sorted(n for n in weights if n not in params and not n.endswith(_IGNORED_SUFFIXES) and not _tied_copy(n, model))
    if unknown:
        raise ModelLoadError(f"{path}: tensor {unknown[0]} has no counterpart in the original ({len(unknown)} such)")
    for name, tensor in weights.items():
        if name in params and tuple(tensor.shape) != tuple(params[name].shape):
            raise ModelLoadError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the original {tuple(params[name].shape)}"
            )


def _tied_copy(name: str, model: torch.nn.Module) -> bool:
    """A tied output head stored separately (its parameter is the embedding's, listed once)."""
    try:
        module_name, _, attr = name.rpartition(".")
        tensor = getattr(model.get_submodule(module_name), attr)
    except AttributeError:
        return False
    return any(tensor is p for p in model.parameters())
