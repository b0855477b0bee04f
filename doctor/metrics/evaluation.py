"""The evaluation pass: per-window NLL, and KL / top-1 agreement against a cached baseline.

The baseline pass keeps, per predicted token, either the full log-probability vector (small vocabularies) or
the top-k log-probs and int32 ids plus the tail mass and argmax (8k + 8 bytes per token, 136 at k=16), as
llama.cpp's KL mode does for large vocabularies. With top-k, KL(P || Q) is computed over the k baseline-likeliest tokens plus one "rest" bucket;
by the log-sum inequality this is a lower bound on the full KL, so the report states the top-k coverage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from doctor.backends.base import Backend
from doctor.errors import NumericError

FULL_VOCAB_LIMIT = 4096  # store full log-probs up to this vocabulary size
DEFAULT_TOP_K = 16
_CHUNK_ELEMENTS = 1 << 23  # logits elements per chunk (32 MiB in float32)


@dataclass
class BaselineCache:
    """What the modified model is compared against; computed once per examination."""

    nll: np.ndarray  # (windows,) mean NLL per window, float64
    argmax: torch.Tensor  # (windows, seq_len - 1) int32
    logp: torch.Tensor | None  # (windows, seq_len - 1, vocab) full log-probs, or None in top-k mode
    topk_logp: torch.Tensor | None  # (windows, seq_len - 1, k)
    topk_idx: torch.Tensor | None  # (windows, seq_len - 1, k) int32
    tail_logp: torch.Tensor | None  # (windows, seq_len - 1) log of the mass outside the top k

    @property
    def mode(self) -> str:
        return "full" if self.logp is not None else f"top-{self.topk_idx.shape[-1]}"


@dataclass
class PassResult:
    nll: np.ndarray  # (windows,) float64
    kl_window: np.ndarray | None = None  # (windows,) mean KL per window
    kl_tokens: np.ndarray | None = None  # (tokens,) float32
    agree_window: np.ndarray | None = None  # (windows,) fraction of argmax agreement
    coverage: float | None = None  # mean baseline probability mass inside the kept top-k


def _chunk_len(batch: int, vocab: int, seq_len: int) -> int:
    return max(1, min(seq_len, _CHUNK_ELEMENTS // max(1, batch * vocab)))


@dataclass
class _Chunk:
    """Logits of windows w0..w1 at predicting positions start..end, with their log-normaliser and token NLL."""

    w0: int
    w1: int
    start: int
    end: int
    logits: torch.Tensor  # (B, t, V) float32 on CPU
    lse: torch.Tensor  # (B, t)
    argmax: torch.Tensor  # (B, t)
    token_nll: torch.Tensor  # (B, t)
    top_values: torch.Tensor | None = None  # (B, t, k) raw logits of the k largest, when asked for
    top_idx: torch.Tensor | None = None  # (B, t, k)


def _chunks(backend: Backend, windows: torch.Tensor, vocab: int, batch_size: int, progress=None, top_k=None):
    """Every (window batch, position chunk) of the evaluation, NaN/inf checked once per position."""
    n_win, seq_len = windows.shape
    preds = seq_len - 1
    for w0 in range(0, n_win, batch_size):
        batch = windows[w0 : w0 + batch_size]
        w1 = w0 + batch.shape[0]
        for start, logits in backend.logits_chunks(batch, _chunk_len(batch.shape[0], vocab, seq_len)):
            end = min(start + logits.shape[1], preds)
            if end <= start:
                continue  # the last position predicts nothing inside the window
            logits = logits[:, : end - start].cpu()
            targets = batch[:, start + 1 : end + 1]
            # fused log-softmax + NLL; NaN or inf anywhere in a row makes its NLL non-finite
            token_nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            token_nll = token_nll.view(targets.shape)  # (B, t)
            if not torch.isfinite(token_nll).all():
                raise NumericError(f"non-finite logits (NaN/inf) in evaluation windows {w0}-{w1 - 1}")
            lse = token_nll + logits.gather(-1, targets[..., None]).squeeze(-1)  # log-normaliser per position
            top_values = top_idx = None
            if top_k:
                top_values, top_idx = logits.topk(top_k, dim=-1)
                argmax = top_idx[..., 0]
            else:
                argmax = logits.argmax(-1)  # (B, t)
            yield _Chunk(w0, w1, start, end, logits, lse, argmax, token_nll, top_values, top_idx)
        if progress:
            progress(batch.shape[0])


def baseline_pass(
    backend: Backend,
    windows: torch.Tensor,
    vocab: int,
    *,
    batch_size: int = 4,
    top_k: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[PassResult, BaselineCache]:
    """NLL per window, and the baseline distribution kept for KL (full, or top-k plus tail)."""
    n_win, seq_len = windows.shape
    full = top_k is None and vocab <= FULL_VOCAB_LIMIT
    k = min(top_k or DEFAULT_TOP_K, vocab)
    preds = seq_len - 1
    nll_sum = torch.zeros(n_win, dtype=torch.float64)
    argmax = torch.empty(n_win, preds, dtype=torch.int32)
    logp_all = torch.empty(n_win, preds, vocab) if full else None
    topk_logp = None if full else torch.empty(n_win, preds, k)
    # int32 ids: about 8k + 8 bytes per token in top-k mode (140 bytes at k=16)
    topk_idx = None if full else torch.empty(n_win, preds, k, dtype=torch.int32)
    tail = None if full else torch.empty(n_win, preds)
    for c in _chunks(backend, windows, vocab, batch_size, progress, top_k=None if full else k):
        rows, cols = slice(c.w0, c.w1), slice(c.start, c.end)
        nll_sum[rows] += c.token_nll.sum(1).double()
        argmax[rows, cols] = c.argmax
        if full:
            logp_all[rows, cols] = c.logits - c.lse[..., None]
        else:
            values = c.top_values - c.lse[..., None]
            topk_logp[rows, cols], topk_idx[rows, cols] = values, c.top_idx
            mass = values.exp().sum(-1)
            tail[rows, cols] = torch.log1p(-mass.clamp(max=1 - 1e-7))
    nll = (nll_sum / preds).numpy()
    cache = BaselineCache(nll, argmax, logp_all, topk_logp, topk_idx, tail)
    coverage = None if full else float(topk_logp.exp().sum(-1).mean())
    return PassResult(nll=nll, kl_window=np.zeros(n_win), agree_window=np.ones(n_win), coverage=coverage), cache


def _kl_chunk(cache: BaselineCache, c: _Chunk) -> torch.Tensor:
    """Per-token KL(baseline || current) for a chunk of current logits (B, t, V)."""
    rows, cols = slice(c.w0, c.w1), slice(c.start, c.end)
    if cache.logp is not None:
        logp = cache.logp[rows, cols]
        return (logp.exp() * (logp - (c.logits - c.lse[..., None]))).sum(-1)
    lp = cache.topk_logp[rows, cols]  # (B, t, k)
    # only the k kept entries of log q are needed: gather before normalising, not after
    lq = c.logits.gather(-1, cache.topk_idx[rows, cols].long()) - c.lse[..., None]
    lp_tail = cache.tail_logp[rows, cols]
    q_tail = (1 - lq.exp().sum(-1)).clamp(min=1e-12)
    return (lp.exp() * (lp - lq)).sum(-1) + lp_tail.exp() * (lp_tail - q_tail.log())


def compare_pass(
    backend: Backend,
    windows: torch.Tensor,
    cache: BaselineCache,
    vocab: int,
    *,
    batch_size: int = 4,
    with_kl: bool = True,
    progress: Callable[[int], None] | None = None,
) -> PassResult:
    """NLL per window and, against the baseline cache, per-token KL and top-1 agreement."""
    n_win, seq_len = windows.shape
    preds = seq_len - 1
    nll_sum = torch.zeros(n_win, dtype=torch.float64)
    hits = torch.zeros(n_win, dtype=torch.float64)
    kl_tokens = torch.empty(n_win, preds) if with_kl else None
    for c in _chunks(backend, windows, vocab, batch_size, progress):
        rows, cols = slice(c.w0, c.w1), slice(c.start, c.end)
        nll_sum[rows] += c.token_nll.sum(1).double()
        hits[rows] += (c.argmax == cache.argmax[rows, cols]).sum(1).double()
        if with_kl:
            kl_tokens[rows, cols] = _kl_chunk(cache, c).clamp(min=0.0)
    result = PassResult(nll=(nll_sum / preds).numpy(), agree_window=(hits / preds).numpy())
    if with_kl:
        result.kl_window = kl_tokens.mean(1).double().numpy()
        result.kl_tokens = kl_tokens.flatten().numpy()
        if cache.logp is None:
            result.coverage = float(cache.topk_logp.exp().sum(-1).mean())
    return result
