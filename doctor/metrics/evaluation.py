"""The evaluation pass: per-window NLL, and KL / top-1 agreement / delta-p against a cached baseline.

What the baseline keeps of its distributions for KL is a `doctor.kl_store` store (full, exact on disk, or by
probability mass); its coverage and bytes per token are reported with the baseline. Per token the pass also
keeps the baseline's probability of the actual next token, for llama.cpp's delta-p statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from doctor.backends.base import Backend
from doctor.errors import NumericError
from doctor.kl_hidden import HiddenUnfit, hidden_bytes_per_token
from doctor.kl_store import KLPlan, capturing, fall_back, make_store

FULL_VOCAB_LIMIT = 4096  # store full log-probs up to this vocabulary size
HIDDEN_MIN_COMPRESSION = 50.0  # auto keeps hidden states when they are at least this much smaller than float32 logits
TOKEN_BYTES = 8  # every store also keeps each token's argmax and the baseline log-prob of its next token
_CHUNK_ELEMENTS = 1 << 23  # logits elements per chunk on the host (32 MiB in float32)
_GPU_CHUNK_ELEMENTS = 1 << 28  # at most, on a GPU (1 GiB in float32): fewer, larger reductions per batch
_GPU_FREE_SHARE = 64  # and at most 1/64 of the device's free memory per chunk (log-softmax and top-k need ~4x)
log = logging.getLogger(__name__)


def compression(vocab: int, store_bytes_per_token: float) -> float:
    """How many times fewer bytes per token than full float32 logits."""
    return 4.0 * vocab / (store_bytes_per_token + TOKEN_BYTES)


def kl_plan(vocab: int, mode: str = "auto", target: float = 0.999, bytes_per_token: int = 4096,
            top_k: int | None = None, *, model=None, tokens: int | None = None,
            hidden_dtype: str | None = None) -> KLPlan:
    """The store for this vocabulary: `auto` keeps the final hidden states when, for `model` over `tokens`
    evaluated tokens (head copy included), they are at least 50x smaller than float32 logits; else everything
    when the vocabulary is small, else by mass. The present rules are also the hidden store's fallback."""
    if top_k:
        return KLPlan("mass", target=1.0, bytes_per_token=bytes_per_token, max_entries=min(top_k, vocab))
    present = "full" if vocab <= FULL_VOCAB_LIMIT else "mass"
    hidden_dtype = None if hidden_dtype == "auto" else hidden_dtype
    if mode == "auto":
        mode = "hidden" if _hidden_pays(vocab, model, tokens, hidden_dtype) else present
    return KLPlan(mode, target=target, bytes_per_token=bytes_per_token, fallback=present, hidden_dtype=hidden_dtype)


def _hidden_pays(vocab: int, model, tokens: int | None, hidden_dtype: str | None) -> bool:
    if model is None or not tokens:
        return False
    try:
        return compression(vocab, hidden_bytes_per_token(model, tokens, hidden_dtype)) >= HIDDEN_MIN_COMPRESSION
    except HiddenUnfit:
        return False


@dataclass
class BaselineCache:
    """What the modified model is compared against; computed once per examination."""

    nll: np.ndarray  # (windows,) mean NLL per window, float64
    argmax: torch.Tensor  # (windows, seq_len - 1) int32
    target_logp: torch.Tensor  # (windows, seq_len - 1) baseline log-prob of the actual next token
    store: object  # a doctor.kl_store store
    plan: KLPlan

    @property
    def mode(self) -> str:
        if self.plan.max_entries:
            return f"top-{self.plan.max_entries}"
        return self.plan.mode

    def coverage(self) -> torch.Tensor:
        """(windows, seq_len - 1) baseline probability mass the KL rests on, per token."""
        return self.store.coverage()

    def describe(self, vocab: int) -> dict[str, float | str]:
        """Mode, target, achieved coverage and storage, for the report's baseline section."""
        cov = self.coverage()
        store_bytes = self.store.bytes_per_token()
        out: dict[str, float | str] = {"kl_mode": self.mode}
        if self.plan.mode == "mass":
            out["kl_target_mass"] = 1.0 if self.plan.max_entries else self.plan.target
        out.update({
            "kl_coverage_mean": float(cov.double().mean()), "kl_coverage_min": float(cov.min()),
            "kl_bytes_per_token": round(store_bytes + TOKEN_BYTES, 1),
            "kl_compression": round(compression(vocab, store_bytes), 1),  # against full float32 logits
        })
        if hasattr(self.store, "facts"):
            out.update(self.store.facts())
        if self.plan.fallback_reason:
            out["kl_hidden_fallback"] = self.plan.fallback_reason
        return out


@dataclass
class PassResult:
    nll: np.ndarray  # (windows,) float64
    kl_window: np.ndarray | None = None  # (windows,) mean KL per window
    kl_tokens: np.ndarray | None = None  # (tokens,) float32
    agree_window: np.ndarray | None = None  # (windows,) fraction of argmax agreement
    coverage: float | None = None  # mean baseline probability mass the KL rests on
    coverage_min: float | None = None
    dp_tokens: np.ndarray | None = None  # (tokens,) p_current(next token) - p_baseline(next token)


def _chunk_elements(backend: Backend) -> int:
    """Logits elements per chunk: small on the host; on a GPU as large as its free memory comfortably allows,
    since a 128K vocabulary in 32 MiB chunks means a hundred small reductions per batch of 2048-token windows."""
    if not str(getattr(backend, "provider", "")).startswith("cuda") or not torch.cuda.is_available():
        return _CHUNK_ELEMENTS
    free, _ = torch.cuda.mem_get_info()
    return max(_CHUNK_ELEMENTS, min(_GPU_CHUNK_ELEMENTS, free // _GPU_FREE_SHARE))


def _chunk_len(batch: int, vocab: int, seq_len: int, elements: int = _CHUNK_ELEMENTS) -> int:
    return max(1, min(seq_len, elements // max(1, batch * vocab)))


@dataclass
class _Chunk:
    """Logits of windows w0..w1 at predicting positions start..end, with their log-normaliser and token NLL."""

    w0: int
    w1: int
    start: int
    end: int
    logits: torch.Tensor  # (B, t, V) float32 on the backend's device (never copied to the host whole)
    lse: torch.Tensor  # (B, t) on the same device
    argmax: torch.Tensor  # (B, t) on CPU
    token_nll: torch.Tensor  # (B, t) on CPU


def _chunks(backend: Backend, windows: torch.Tensor, vocab: int, batch_size: int, progress=None):
    """Every (window batch, position chunk) of the evaluation, NaN/inf checked once per position."""
    n_win, seq_len = windows.shape
    preds = seq_len - 1
    elements = _chunk_elements(backend)
    for w0 in range(0, n_win, batch_size):
        batch = windows[w0 : w0 + batch_size]
        w1 = w0 + batch.shape[0]
        for start, logits in backend.logits_chunks(batch, _chunk_len(batch.shape[0], vocab, seq_len, elements)):
            end = min(start + logits.shape[1], preds)
            if end <= start:
                continue  # the last position predicts nothing inside the window
            # the (B, t, V) logits stay where the model computed them: on a GPU, copying them to the host
            # would cost more than the forward pass; only per-token values cross over
            logits = logits[:, : end - start]
            targets = batch[:, start + 1 : end + 1].to(logits.device)
            # fused log-softmax + NLL; NaN or inf anywhere in a row makes its NLL non-finite
            token_nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            token_nll = token_nll.view(targets.shape)  # (B, t)
            lse = token_nll + logits.gather(-1, targets[..., None]).squeeze(-1)  # log-normaliser per position
            token_nll = token_nll.cpu()
            if not torch.isfinite(token_nll).all():
                raise NumericError(f"non-finite logits (NaN/inf) in evaluation windows {w0}-{w1 - 1}")
            yield _Chunk(w0, w1, start, end, logits, lse, logits.argmax(-1).cpu(), token_nll)
        if progress:
            progress(batch.shape[0])


def _fell_back(plan: KLPlan, reason: str) -> KLPlan:
    log.warning("KL store: %s; keeping %s instead", reason, plan.fallback)
    return fall_back(plan, reason)


def baseline_pass(
    backend: Backend,
    windows: torch.Tensor,
    vocab: int,
    *,
    batch_size: int = 4,
    plan: KLPlan | None = None,
    top_k: int | None = None,
    spill_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[PassResult, BaselineCache]:
    """NLL per window, and the baseline distribution kept for KL as `plan` says (default: by vocabulary)."""
    plan = plan or kl_plan(vocab, top_k=top_k)
    n_win, seq_len = windows.shape
    preds = seq_len - 1
    nll_sum = torch.zeros(n_win, dtype=torch.float64)
    argmax = torch.empty(n_win, preds, dtype=torch.int32)
    target_logp = torch.empty(n_win, preds)
    model = getattr(backend, "model", None)
    try:
        store = make_store(plan, n_win, preds, vocab, spill_dir, model)
    except HiddenUnfit as exc:
        plan = _fell_back(plan, str(exc))
        store = make_store(plan, n_win, preds, vocab, spill_dir)
    with capturing(store):
        for c in _chunks(backend, windows, vocab, batch_size, progress):
            rows, cols = slice(c.w0, c.w1), slice(c.start, c.end)
            nll_sum[rows] += c.token_nll.sum(1).double()
            argmax[rows, cols] = c.argmax.to(torch.int32)
            target_logp[rows, cols] = -c.token_nll
            try:
                store.add(rows, cols, c.logits, c.lse)
            except HiddenUnfit as exc:  # raised on the first chunk only: the fallback store misses nothing
                plan = _fell_back(plan, str(exc))
                store = make_store(plan, n_win, preds, vocab, spill_dir)
                store.add(rows, cols, c.logits, c.lse)
    store.finish()
    nll = (nll_sum / preds).numpy()
    cache = BaselineCache(nll, argmax, target_logp, store, plan)
    coverage = cache.coverage()
    return PassResult(
        nll=nll, kl_window=np.zeros(n_win), agree_window=np.ones(n_win), coverage=float(coverage.double().mean()),
        coverage_min=float(coverage.min()),
    ), cache


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
    """NLL per window and, against the baseline cache, per-token KL, top-1 agreement and delta-p."""
    n_win, seq_len = windows.shape
    preds = seq_len - 1
    nll_sum = torch.zeros(n_win, dtype=torch.float64)
    hits = torch.zeros(n_win, dtype=torch.float64)
    kl_tokens = torch.empty(n_win, preds) if with_kl else None
    dp_tokens = torch.empty(n_win, preds)
    for c in _chunks(backend, windows, vocab, batch_size, progress):
        rows, cols = slice(c.w0, c.w1), slice(c.start, c.end)
        nll_sum[rows] += c.token_nll.sum(1).double()
        hits[rows] += (c.argmax == cache.argmax[rows, cols]).sum(1).double()
        dp_tokens[rows, cols] = (-c.token_nll).exp() - cache.target_logp[rows, cols].exp()
        if with_kl:
            kl_tokens[rows, cols] = cache.store.kl(rows, cols, c.logits, c.lse).clamp(min=0.0)
    result = PassResult(nll=(nll_sum / preds).numpy(), agree_window=(hits / preds).numpy(),
                        dp_tokens=dp_tokens.flatten().numpy())
    if with_kl:
        result.kl_window = kl_tokens.mean(1).double().numpy()
        result.kl_tokens = kl_tokens.flatten().numpy()
        coverage = cache.coverage()
        result.coverage, result.coverage_min = float(coverage.double().mean()), float(coverage.min())
    return result
