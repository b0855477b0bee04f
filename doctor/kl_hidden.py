"""The `hidden` KL store: the baseline's final hidden states and a frozen copy of its output head.

The output head is a linear map, so the baseline logits are head(h) for the final hidden state h (the head's
input, after the final norm). Keeping h (d numbers per token instead of V) and a copy of the head taken before
any checkup runs (a checkup may modify the live head) lets the comparison pass recompute the baseline logits
chunk by chunk: KL is exact up to float rounding, at d/V of the storage plus the head copy once.

The store captures h with a forward pre-hook on the head during the baseline pass, and checks on the first chunk
that the recomputed logits equal the model's own (heads that do more than the linear map, such as Gemma-2's
final soft-capping or Cohere's logit scale, get that transform from the config). When the model's logits
cannot be reproduced, `HiddenUnfit` says why and the caller falls back to another store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# storage dtype -> (torch dtype, numpy dtype of the memory-mapped file); bfloat16 is kept as its raw bits
STORAGE = {
    "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16),
    "bfloat16": (torch.bfloat16, np.uint16),
}
CHECK_ULPS = 8  # recomputed vs model logits: at most this many float steps of the largest logit


class HiddenUnfit(Exception):
    """The model's logits cannot be recomputed from its final hidden states; the message says why."""


def output_head(model) -> torch.nn.Linear:
    """The model's output head when it is a plain linear layer, else `HiddenUnfit`."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    if head is None:
        raise HiddenUnfit("the backend exposes no torch output head")
    if not isinstance(head, torch.nn.Linear):
        raise HiddenUnfit(f"the output head is a {type(head).__name__}, not a linear layer")
    if head.weight.device.type == "meta":
        raise HiddenUnfit("the output head's weight is offloaded (meta device): no copy to freeze")
    return head


def logit_transform(config) -> tuple[Callable[[torch.Tensor], torch.Tensor], str | None]:
    """What the model does to its head's output (from the config), and a description; identity when nothing."""
    scale = getattr(config, "logit_scale", None)  # Cohere: logits * logit_scale
    divide = getattr(config, "logits_scaling", None)  # Granite: logits / logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma-2/3: cap * tanh(logits / cap)
    steps, names = [], []
    if scale:
        steps.append(lambda x, s=float(scale): x * s)
        names.append(f"logits x {scale:g}")
    if divide:
        steps.append(lambda x, d=float(divide): x / d)
        names.append(f"logits / {divide:g}")
    if cap:
        steps.append(lambda x, c=float(cap): c * torch.tanh(x / c))
        names.append(f"soft-capping at {cap:g}")

    def apply(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return apply, (", ".join(names) or None)


def storage_dtype(head: torch.nn.Linear, requested: str | None) -> str:
    """The requested storage dtype, else the head's own (lossless: 16-bit models keep 16-bit states)."""
    if requested:
        return requested
    return {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(head.weight.dtype, "float32")


def nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def hidden_bytes_per_token(model, tokens: int, requested: str | None = None) -> float:
    """Storage per evaluated token: its hidden state plus its share of the head copy; `HiddenUnfit` if none."""
    head = output_head(model)
    itemsize = STORAGE[storage_dtype(head, requested)][0].itemsize
    return head.in_features * itemsize + nbytes(head.weight, head.bias) / max(1, tokens)


class HiddenStore:
    """Final hidden states on disk (memory-mapped) and the baseline head, frozen at construction."""

    def __init__(self, n_win: int, preds: int, vocab: int, model, dtype: str | None = None,
                 spill_dir: Path | None = None) -> None:
        self._head = output_head(model)
        if self._head.out_features != vocab:
            raise HiddenUnfit(f"the output head has {self._head.out_features} rows, the vocabulary {vocab}")
        self.transform, self.transform_name = logit_transform(getattr(model, "config", None))
        # the baseline head, frozen before any checkup, on the head's device and in its dtype
        self.weight = self._head.weight.detach().clone()
        self.bias = None if self._head.bias is None else self._head.bias.detach().clone()
        self.head_bytes = nbytes(self.weight, self.bias)
        self.dtype = storage_dtype(self._head, dtype)
        self.shape = (n_win, preds, self._head.in_features)
        # unlinked at once: the file lives as long as the store, whatever happens to the examination
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=spill_dir, prefix="doctor-kl-", suffix=".hidden")  # noqa: SIM115
        self.states = np.memmap(self._file, dtype=STORAGE[self.dtype][1], mode="w+", shape=self.shape)
        self.check_diff: float | None = None  # max |recomputed - model| logit on the first chunk
        self._captured: torch.Tensor | None = None
        self._fresh, self._capture_start = False, 0

    def __getstate__(self) -> dict:
        """Pickled (the Ray executor shares the baseline with its workers): the states travel as an array that
        Ray's object store holds once per node; the live head, its hook and the file stay behind."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_head", "_file", "_captured")}
        state["states"] = np.asarray(self.states)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _head=None, _file=None, _captured=None)

    @contextmanager
    def capturing(self):
        """Record the head's input while the baseline pass runs."""
        handle = self._head.register_forward_pre_hook(self._capture)
        try:
            yield
        finally:
            handle.remove()
            self._captured = None

    def _capture(self, module, args) -> None:
        self._captured, self._fresh = args[0].detach(), True

    def _hidden_of(self, cols: slice, shape: torch.Size) -> torch.Tensor:
        # a head call covers either one position chunk (the backend's chunked head) or the whole window (a full
        # forward); a call since the last chunk starts at this chunk's first position, else it is the same call
        if self._captured is None:
            raise HiddenUnfit("the output head was not called during the baseline pass")
        if self._fresh:
            self._capture_start, self._fresh = cols.start, False
        hidden = self._captured[:, cols.start - self._capture_start : cols.stop - self._capture_start]
        if hidden.shape[:2] != shape:
            raise HiddenUnfit(f"the head's input covers {tuple(hidden.shape[:2])} (windows, positions) of the "
                              f"chunk's {tuple(shape)}")
        return hidden

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Baseline logits (B, t, V) float32 on the head's device from hidden states (B, t, d)."""
        h = hidden.to(self.weight.device, self.weight.dtype)
        return self.transform(F.linear(h, self.weight, self.bias)).float()

    def add(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> None:
        first = self.check_diff is None
        try:
            hidden = self._hidden_of(cols, logits.shape[:2])
            if first:
                self._check(hidden, logits)
        except HiddenUnfit as exc:
            if first:
                raise  # nothing stored yet: the caller falls back to another store
            raise RuntimeError(f"hidden KL store, windows {rows.start}-{rows.stop - 1}: {exc}") from exc
        torch_dtype, np_dtype = STORAGE[self.dtype]
        values = hidden.to(torch_dtype).cpu()
        if torch_dtype is torch.bfloat16:
            values = values.view(torch.int16)
        self.states[rows, cols] = values.numpy().view(np_dtype)

    def _check(self, hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """The first chunk's recomputed logits must equal the model's own to a few float steps."""
        recomputed = self._logits(hidden).to(logits.device)
        diff = float((recomputed - logits).abs().max())
        tol = CHECK_ULPS * torch.finfo(self.weight.dtype).eps * max(1.0, float(logits.abs().max()))
        if not diff <= tol:
            applied = f" after {self.transform_name}" if self.transform_name else ""
            raise HiddenUnfit(f"logits recomputed from the final hidden states{applied} differ from the model's by "
                              f"up to {diff:.3g} (tolerance {tol:.2g}): the head does more than a linear map")
        self.check_diff = diff

    def finish(self) -> None:
        self.states.flush()

    def stored(self, rows: slice, cols: slice) -> torch.Tensor:
        values = torch.from_numpy(np.ascontiguousarray(self.states[rows, cols]))
        if self.dtype == "bfloat16":
            values = values.view(torch.int16).view(torch.bfloat16)
        return values

    def kl(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        lp = self._logits(self.stored(rows, cols)).to(logits.device).log_softmax(-1)  # where the logits are
        return (lp.exp() * (lp - (logits - lse[..., None]))).sum(-1).cpu()

    def coverage(self) -> torch.Tensor:
        return torch.ones(self.shape[:2])  # the whole distribution, recomputed

    def bytes_per_token(self) -> float:
        tokens = self.shape[0] * self.shape[1]
        return self.shape[2] * STORAGE[self.dtype][0].itemsize + self.head_bytes / max(1, tokens)

    def facts(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {
            "kl_hidden_size": self.shape[2], "kl_hidden_dtype": self.dtype,
            "kl_head_bytes": self.head_bytes,
            "kl_head_check_max_abs": float(f"{self.check_diff:.3g}") if self.check_diff is not None else None,
            "kl_exactness": "exact up to float rounding: baseline logits recomputed from stored final hidden states",
        }
        if self.transform_name:
            out["kl_head_transform"] = self.transform_name
        return out
