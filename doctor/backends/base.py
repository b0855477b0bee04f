"""The backend contract: logits for a batch of token windows, delivered in position chunks.

Chunking the output layer keeps memory at (batch, chunk, vocab) instead of (batch, seq_len, vocab), which
matters for 32K-256K vocabularies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch


class Backend(Protocol):
    name: str  # "torch" or "onnx"
    provider: str  # e.g. "cpu", "cuda", "CPUExecutionProvider"

    def logits_chunks(self, ids: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, logits) with logits (batch, <=chunk, vocab) float32 on CPU or the model's device,
        covering positions start..start+chunk of `ids` (batch, seq_len)."""
        ...
