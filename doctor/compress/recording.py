"""What the compression passes need to record a change before making it, so that it can be undone.

`doctor.modifications.base.UndoLog` is the implementation; compress/ only names the two calls it makes, so it
stays below modifications/ and takes the log as a plain argument.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class ChangeLog(Protocol):
    def save_tensor(self, tensor: torch.Tensor) -> None:
        """Call before changing `tensor` in place."""

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        """`setattr`, remembering the old value."""
