"""Checks on a model's files and weights that turn library tracebacks into one line saying what to do.

An interrupted download leaves a truncated `model.safetensors`; a folder copied without its tokenizer loads
weights and then fails far away; a model with NaN weights makes every checkup look broken. Each is caught
where it can first be seen and named with its file.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

from doctor.errors import ModelLoadError

# files any Hugging Face tokenizer is built from (fast, SentencePiece, BPE, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt")
_MAX_HEADER = 100 << 20  # the safetensors format's own limit on the JSON header
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_hub_id(ref: str) -> bool:
    """`owner/name`, the only shape tried on the hub (and only when no such local path exists)."""
    return bool(_HUB_ID.match(ref)) and ".." not in ref


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cached(repo_id: str) -> bool:
    """Whether the hub cache holds this model's config (asked before transformers is imported)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id after all
        return False


def check_config(path: Path) -> None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(config).__name__}")


def check_safetensors(path: Path) -> None:
    """The header is complete and every tensor lies inside the file; otherwise the download was cut short."""
    size = path.stat().st_size
    hint = "the file is truncated or corrupt (an interrupted download?); download it again"
    try:
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"{path}: {size} bytes, too short for a safetensors header; {hint}")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER or 8 + length > size:
                raise ModelLoadError(f"{path}: header of {length:,} bytes but the file has {size:,}; {hint}")
            header = json.loads(fh.read(length))
    except (ValueError, UnicodeDecodeError):
        raise ModelLoadError(f"{path}: unreadable safetensors header; {hint}") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: unreadable safetensors header; {hint}")
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    data = size - 8 - length
    if any(not isinstance(end, int) for end in ends):
        raise ModelLoadError(f"{path}: unreadable safetensors header; {hint}")
    if ends and max(ends) > data:
        raise ModelLoadError(f"{path}: tensors need {max(ends):,} bytes of data but the file holds {data:,}; {hint}")


def check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); copy the tokenizer files from "
            "the model's source next to config.json"
        )


def check_finite(model, source: str) -> None:
    """NaN or infinite weights in the unmodified model: the model itself is broken, not any checkup."""
    import torch

    from doctor.placement.offload import state_items

    bad = []
    with torch.no_grad():
        for name, tensor in state_items(model):  # offloaded tensors one at a time
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                bad.append(name)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelLoadError(
            f"{source}: the unmodified model has NaN or infinite weights in {bad[0]}{more}; the model files are "
            "broken (re-download or re-export them), no checkup can be measured against it"
        )
