"""What the compression passes need to record a change before making it, so that it can be undone.

`doctor.modifications.base.UndoLog` is the implementation; compress/ only names the two calls it makes, so it
stays below modifications/ and takes the log as a plain argument. Offloaded layers
(`doctor.placement.offload`) also ask whether a tensor was saved and hand its restore over to their storage.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class ChangeLog(Protocol):
    def save_tensor(self, tensor: torch.Tensor) -> None:
        """Call before changing `tensor` in place."""

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        """`setattr`, remembering the old value."""

    def saved(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` was saved since the last restore."""

    def release(self, tensor: torch.Tensor, module: Any, name: str) -> None:
        """Drop the saved copy of `tensor`: its storage is restored by a later entry (an offloaded layer)."""
