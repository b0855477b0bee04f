"""Capture the inputs of decoder layer 0 for the calibration windows, then feed layers one at a time.

As in the reference implementations of GPTQ (IST-DASLab/gptq, `llama_sequential`), SparseGPT and Wanda, the model
runs only up to its first decoder block: a pre-hook records everything the block is called with (hidden states,
attention mask, rotary position embeddings, position ids, ...) and stops the forward with a private exception.
From then on each layer is run on the recorded hidden states with the recorded arguments, so only one layer's
activations are alive at a time. Windows are equal-length with no padding, so the non-hidden arguments are the
same for every batch of a given size; they are kept once per batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from doctor.compress.adapters import decoder_layers
from doctor.compress.hooks import forward_hooks
from doctor.placement.offload import execution_device


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; never escapes `run_until_stopped`."""


def stop_forward() -> None:
    """End the current forward pass (call from inside a hook run under `run_until_stopped`)."""
    raise _StopForward


def run_until_stopped(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Call `fn`; True if a hook stopped it with `stop_forward()`, False if it ran to the end."""
    try:
        fn(*args, **kwargs)
    except _StopForward:
        return True
    return False


def layer_output(output: Any) -> torch.Tensor:
    """The hidden states of a block's output: blocks return a tensor or (in older versions) a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find hidden states in a block output of type {type(output).__name__}")


@dataclass
class LayerInputs:
    """Calibration inputs of one decoder layer: hidden states per batch plus the shared call arguments."""

    hidden: list[torch.Tensor]  # per batch: (batch, seq_len, hidden)
    args: dict[int, tuple] = field(default_factory=dict)  # positional arguments after the hidden states
    kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)  # by batch size
    hidden_keyword: str | None = None  # set when the block received its hidden states as a keyword

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    def call(self, layer: nn.Module, index: int) -> torch.Tensor:
        """Run `layer` on batch `index` with the recorded arguments; returns its hidden states."""
        h = self.hidden[index]
        size = h.shape[0]
        kwargs = dict(self.kwargs[size])
        if self.hidden_keyword is not None:
            kwargs[self.hidden_keyword] = h
            return layer_output(layer(*self.args[size], **kwargs))
        return layer_output(layer(h, *self.args[size], **kwargs))

    def run(self, layer: nn.Module) -> list[torch.Tensor]:
        """The layer's outputs for every batch (the next layer's inputs)."""
        with torch.no_grad():
            return [self.call(layer, i) for i in range(len(self))]

    def with_hidden(self, hidden: list[torch.Tensor]) -> LayerInputs:
        """The same call arguments with new hidden states (the next layer's inputs)."""
        return LayerInputs(hidden, self.args, self.kwargs, self.hidden_keyword)


def input_device(model: nn.Module) -> torch.device:
    return execution_device(model)


def batches(windows: torch.Tensor, batch_tokens: int, first_tokens: int | None = None) -> list[torch.Tensor]:
    """Consecutive windows, about `batch_tokens` tokens per batch (at least one window).

    `first_tokens`: the first batch is the fewest leading windows holding at least that many tokens (a subset a
    solver may look at alone); the rest follow in batches of `batch_tokens`.
    """
    seq_len = max(1, windows.shape[1])
    size = max(1, batch_tokens // seq_len)
    if first_tokens is None:
        return list(torch.split(windows, size))
    first = min(windows.shape[0], -(-first_tokens // seq_len))
    return [windows[:first], *torch.split(windows[first:], size)] if first < windows.shape[0] else [windows]


def capture_layer_inputs(model: nn.Module, windows: torch.Tensor, batch_tokens: int = 4096,
                         first_tokens: int | None = None) -> LayerInputs:
    """Everything decoder layer 0 receives for `windows` (samples, seq_len), without running any decoder layer."""
    first = decoder_layers(model)[0]
    captured = LayerInputs(hidden=[])

    def record(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        if args:
            hidden, rest = args[0], tuple(args[1:])
        else:
            captured.hidden_keyword = "hidden_states"
            hidden, rest = kwargs.pop("hidden_states"), ()
        captured.hidden.append(hidden.detach())
        size = hidden.shape[0]
        if size not in captured.kwargs:
            captured.args[size] = rest
            captured.kwargs[size] = kwargs
        stop_forward()

    device = input_device(model)
    with torch.no_grad(), forward_hooks([(first, record)], pre=True, with_kwargs=True):
        for batch in batches(windows, batch_tokens, first_tokens):
            if not run_until_stopped(model, input_ids=batch.to(device), use_cache=False):
                raise RuntimeError(f"{type(model).__name__} finished a forward without calling decoder layer 0")
    return captured
