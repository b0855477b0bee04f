"""Where dequantized GGUF checkpoints are kept: one safetensors folder per file SHA-256.

Dequantizing a GGUF through transformers takes tens of seconds and a tokenizer rebuild; the cached folder
loads like any Hugging Face checkpoint in a few. The key is the file's content hash, so a renamed or moved
file still hits, and a changed file never reads a stale conversion.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "MODEL_DOCTOR_CACHE"
COMPLETE = "conversion-complete"  # written last: a folder without it is an interrupted conversion


def cache_root() -> Path:
    """$MODEL_DOCTOR_CACHE when set, else the user cache dir (e.g. ~/.cache/model-doctor on Linux)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("model-doctor", appauthor=False))


def entry_dir(sha256: str) -> Path:
    return cache_root() / "gguf" / sha256


def cached(sha256: str) -> Path | None:
    folder = entry_dir(sha256)
    return folder if (folder / COMPLETE).is_file() else None


def publish(staging: Path, sha256: str) -> Path:
    """Move a finished conversion into place atomically; a concurrent finished copy wins."""
    (staging / COMPLETE).write_text(sha256 + "\n")
    target = entry_dir(sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    if cached(sha256) is not None:
        shutil.rmtree(staging, ignore_errors=True)
        return target
    if target.exists():  # an interrupted earlier conversion
        shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def staging_dir(sha256: str) -> Path:
    root = cache_root() / "gguf"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=root))
