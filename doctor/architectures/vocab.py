"""Token ids against the model's embedding: a tokenizer larger than the embedding must not index past it.

A tokenizer smaller than the embedding (Qwen2 pads its embedding to a multiple of 64) is fine; one larger
(added tokens the model was never resized for) is fine as long as the text never produces those ids. The ids
actually used are checked, and an id past the embedding is refused naming both sizes, instead of an
IndexError deep inside the forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from doctor.errors import DataError


def embedding_rows(model: nn.Module) -> int | None:
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embedding, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else None


def tokenizer_size(tokenizer) -> int | None:
    try:
        return len(tokenizer)
    except TypeError:
        return getattr(tokenizer, "vocab_size", None)


def check_token_ids(ids: torch.Tensor, model: nn.Module, tokenizer, where: str) -> None:
    """Raise a one-line DataError if any id is negative or not below the embedding's row count."""
    rows = embedding_rows(model)
    if rows is None or ids.numel() == 0:
        return
    largest, smallest = int(ids.max()), int(ids.min())
    if largest < rows and smallest >= 0:
        return
    size = tokenizer_size(tokenizer)
    bad = largest if largest >= rows else smallest
    raise DataError(
        f"{where}: the tokenizer produced token id {bad}, outside the model's embedding of {rows} rows "
        f"(tokenizer vocabulary: {size if size is not None else 'unknown'} tokens); the tokenizer does not "
        f"belong to this model or the embedding was not resized"
    )
