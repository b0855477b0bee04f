"""The contract every modification follows: apply to a patient, record what was touched, restore exactly.

A modification never reloads the model. It records each change in an `UndoLog` before making it: tensors are
cloned once (then restored with `copy_`, bit for bit), replaced modules and changed attributes are kept aside.
`restore()` replays the log backwards, so shape changes and layer-count changes undo too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from doctor.results import LayerStat, TextInfo

_MISSING = object()


class UndoLog:
    """Changes to a model in order, undone in reverse."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, Any, Any, Any]] = []
        self._saved: set[int] = set()
        self._released: dict[tuple[int, str], Any] = {}  # (id(module), name) -> module, for `changed`

    def save_tensor(self, tensor: torch.Tensor) -> None:
        """Call before changing `tensor` in place; later calls for the same tensor are no-ops."""
        key = id(tensor)
        if key in self._saved:
            return
        self._saved.add(key)
        self._entries.append(("tensor", tensor, tensor.detach().clone(), None))

    def saved(self, tensor: torch.Tensor) -> bool:
        """Whether `tensor` was saved (and so possibly changed) since the last restore."""
        return id(tensor) in self._saved

    def changed(self, module: Any, name: str) -> bool:
        """Whether `module.<name>` was saved (possibly changed), including offloaded tensors written back."""
        return self.saved(getattr(module, name)) or (id(module), name) in self._released

    def release(self, tensor: torch.Tensor, module: Any, name: str) -> None:
        """Drop the saved copy of `tensor` (`module.<name>`): a later entry restores its storage instead.

        Offloaded layers are restored by putting their original storage back (doctor.placement.offload), so the
        copy would only hold a layer's weights in memory for nothing."""
        for i, (kind, target, saved, extra) in enumerate(self._entries):
            if kind == "tensor" and target is tensor:
                self._entries[i] = (kind, target, saved.to("meta"), extra)
        self._released[(id(module), name)] = module

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        """`setattr`, remembering the old value (or its absence). Works for modules and configs."""
        old = getattr(obj, name, _MISSING)
        setattr(obj, name, value)  # first: a refused set (a read-only property) must leave nothing to undo
        self._entries.append(("attr", obj, name, old))

    def set_item(self, container: Any, index: int, value: Any) -> None:
        """`container[index] = value` for lists and ModuleLists."""
        self._entries.append(("item", container, index, container[index]))
        container[index] = value

    def __len__(self) -> int:
        return len(self._entries)

    def originals(self) -> dict[int, torch.Tensor]:
        """The saved copy of every tensor changed in place, by `id` of the live tensor."""
        return {id(target): saved for kind, target, saved, _ in self._entries
                if kind == "tensor" and saved.device.type != "meta"}

    def restore(self) -> None:
        for kind, target, a, b in reversed(self._entries):
            if kind == "tensor":
                with torch.no_grad():
                    if target.shape != a.shape:
                        raise RuntimeError("a saved tensor changed shape in place; replace the module instead")
                    if a.device.type != "meta":  # released: restored through its storage
                        target.copy_(a)
            elif kind == "attr":
                if b is _MISSING:
                    delattr(target, a)
                else:
                    setattr(target, a, b)
            else:
                target[a] = b
        self._entries.clear()
        self._saved.clear()
        self._released.clear()


@dataclass
class Calibration:
    """Calibration windows and where they came from."""

    windows: torch.Tensor  # (samples, seq_len) token ids
    info: TextInfo


@dataclass
class ApplyContext:
    """What a modification may use. `state` carries non-weight effects (a decoding strategy, an ORT session)."""

    patient: Any  # doctor.patient.Patient
    undo: UndoLog
    calibration: Callable[..., Calibration]  # (CalibrationSpec | None, method=MethodWindows | None) -> Calibration
    out_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda message: None


@dataclass
class Applied:
    """What a modification reports about itself: realized (measured, not requested) values and layer facts."""

    realized: dict[str, Any] = field(default_factory=dict)
    layers: list[LayerStat] = field(default_factory=list)
    calibration: TextInfo | None = None
