"""Forward hooks that are always removed, even when the code inside the `with` block raises.

A hook left behind after a failed checkup would silently keep collecting (or stopping forwards) during every
later measurement, so registration and removal live in one context manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.hooks import RemovableHandle

Hook = Callable[..., object]


@contextmanager
def forward_hooks(
    hooks: Iterable[tuple[nn.Module, Hook]], *, pre: bool = False, with_kwargs: bool = False
) -> Iterator[list[RemovableHandle]]:
    """Register `(module, hook)` pairs as forward hooks (or forward pre-hooks with `pre=True`).

    Hook signatures are PyTorch's: `hook(module, args[, kwargs], output)` for forward hooks and
    `hook(module, args[, kwargs])` for pre-hooks; `with_kwargs=True` adds the keyword arguments.
    """
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks:
            if pre:
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=with_kwargs))
            else:
                handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))
        yield handles
    finally:
        for handle in handles:
            handle.remove()
