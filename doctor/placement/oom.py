"""Out of memory inside one checkup: a recorded failure naming the device and the stage, caches freed.

PyTorch raises `torch.OutOfMemoryError` (CUDA, and other accelerators), the CPU allocator a RuntimeError that
says it cannot allocate, Python `MemoryError`. The weights are restored by the checkup's undo log as for any
failure; what is left to do here is to say where it ran out and to give the memory back before the next one.
"""

from __future__ import annotations

import gc

import torch

_CPU_OOM = ("can't allocate memory", "cannot allocate memory", "out of memory")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _CPU_OOM)


def oom_message(exc: BaseException, device: torch.device | str, stage: str) -> str:
    """'out of memory on cuda:0 while applying quantize: CUDA out of memory. Tried to allocate 2.00 GiB ...'"""
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines and lines[0] else ""
    return (f"out of memory on {device} while {stage}{detail} (see `doctor examine --help` for --max-memory and "
            "--device-map)")


def free_caches() -> None:
    """Drop what the failed checkup left allocated (its tensors are garbage once its frames are gone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
