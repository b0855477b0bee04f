"""GGUF candidates: every tensor dequantized by the `gguf` package, mapped to the original's parameter names by
transformers' GGUF loader (which also undoes llama.cpp's q/k row permutation)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from doctor.errors import ModelLoadError


def require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelLoadError('reading GGUF files needs the gguf package: pip install "model-doctor[gguf]"') from None


def token_list(path: Path) -> list[str] | None:
    """The vocabulary stored in the file (`tokenizer.ggml.tokens`), or None when it has none."""
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.ggml.tokens")
    if field is None:
        return None
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


@contextmanager
def _no_progress_bar(module):
    original = module.tqdm
    module.tqdm = lambda iterable, **_: iterable
    try:
        yield
    finally:
        module.tqdm = original


def read_gguf(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float32 tensors keyed by `model`'s parameter names."""
    require_gguf()
    from transformers import modeling_gguf_pytorch_utils as hf_gguf

    logging.getLogger(hf_gguf.__name__).setLevel(logging.ERROR)
    try:
        with _no_progress_bar(hf_gguf):  # its per-tensor bar would interleave with the examination's progress
            parsed = hf_gguf.load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model,
                                                  torch_dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: cannot read GGUF: {first}") from None
    return parsed["tensors"]
