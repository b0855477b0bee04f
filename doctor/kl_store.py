"""What the baseline keeps of its next-token distributions, so that KL(baseline || modified) can be computed later.

Four stores, chosen by `EvalSpec.kl_mode`:
- `full`: every float32 log-probability in memory; small vocabularies only (4 V bytes per token).
- `exact`: every log-probability as uint16 on a per-token linear grid between the token's smallest and largest
  logit, in a file on disk (llama.cpp's `--kl-divergence-base` record, 2 V + 8 bytes per token, without its
  16-nat floor). The decoded logits are renormalised, so the stored baseline is a distribution and
  KL(base, base) = 0; the grid step (range / 65535, about 5e-4 nats) bounds the error.
- `mass`: per token, the fewest log-probabilities whose probabilities reach `target` (default 0.999), at most
  as many as `bytes_per_token` allows (8 bytes each: float32 log-prob and int32 id), plus one bucket for the
  rest. KL over these buckets is a lower bound on the full KL (log-sum inequality); the kept mass per token
  (coverage) says by how much it can fall short. A fixed k (`kl_top_k`) is the same store with target 1.
- `hidden`: each token's final hidden state and a frozen copy of the baseline output head
  (`doctor.kl_hidden`); the baseline logits are recomputed at KL time, exact up to float rounding, at d/V of
  the storage plus the head once. A head it cannot reproduce falls back to `plan.fallback` with the reason.

Every store keeps its data on the host (a GPU's memory is for the model) and is handed logits on the model's
device: `add` reduces them there and copies only what it keeps; `kl` brings the stored slice to the logits'
device, gathers there and returns (B, t) on the host.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from doctor.kl_hidden import HiddenStore

ENTRY_BYTES = 8  # float32 log-prob + int32 token id
TOKEN_BYTES = 8  # per kept token in mass mode: the tail log-mass and the entry count (float32 + int32)
EXACT_TOKEN_BYTES = 8  # per token in exact mode: the grid's scale and offset (float32 each)


@dataclass(frozen=True)
class KLPlan:
    """How the baseline keeps its distributions: the mode, and for `mass` the target and the budget."""

    mode: str  # "full" | "exact" | "mass" | "hidden"
    target: float = 0.999
    bytes_per_token: int = 4096
    max_entries: int | None = None  # fixed k: the legacy top-k store (target 1)
    fallback: str = "mass"  # hidden mode: the store used when the head cannot be reproduced
    hidden_dtype: str | None = None  # hidden mode: storage dtype of the states (default: the head's)
    fallback_reason: str | None = None  # why this plan is not the hidden one it was asked to be

    def entries_cap(self, vocab: int) -> int:
        cap = self.max_entries or max(1, (self.bytes_per_token - TOKEN_BYTES) // ENTRY_BYTES)
        return min(vocab, cap)


class FullStore:
    """Every float32 log-probability, in memory."""

    def __init__(self, n_win: int, preds: int, vocab: int, spill_dir: Path | None = None) -> None:
        self.logp = torch.empty(n_win, preds, vocab)

    def add(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> None:
        self.logp[rows, cols] = logits - lse[..., None]

    def finish(self) -> None:
        pass

    def kl(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        lp = self.logp[rows, cols].to(logits.device, non_blocking=True)
        return (lp.exp() * (lp - (logits - lse[..., None]))).sum(-1).cpu()

    def coverage(self) -> torch.Tensor:
        return torch.ones(self.logp.shape[:2])

    def bytes_per_token(self) -> float:
        return 4.0 * self.logp.shape[-1]


class ExactStore:
    """Every log-probability on a per-token uint16 grid, memory-mapped from a temporary file on disk."""

    def __init__(self, n_win: int, preds: int, vocab: int, spill_dir: Path | None = None) -> None:
        self.shape = (n_win, preds, vocab)
        # unlinked at once: the file lives as long as the store, whatever happens to the examination
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=spill_dir, prefix="doctor-kl-", suffix=".u16")  # noqa: SIM115
        self.codes = np.memmap(self._file, dtype=np.uint16, mode="w+", shape=self.shape)
        self.low = torch.empty(n_win, preds)  # smallest logit of the token
        self.step = torch.empty(n_win, preds)  # grid step: (largest - smallest) / 65535

    def __getstate__(self) -> dict:
        """Pickled (the Ray executor shares the baseline with its workers), the codes travel as an array: Ray's
        object store holds it once per node and the workers read it in place."""
        return {"shape": self.shape, "codes": np.asarray(self.codes), "low": self.low, "step": self.step}

    def __setstate__(self, state: dict) -> None:
        self.shape, self.codes, self.low, self.step = state["shape"], state["codes"], state["low"], state["step"]

    def add(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> None:
        low, high = logits.amin(-1), logits.amax(-1)
        step = ((high - low) / 65535).clamp(min=1e-30)
        codes = ((logits - low[..., None]) / step[..., None]).round().clamp(0, 65535)
        # int32 -> int16 keeps the low 16 bits: the uint16 code's bit pattern, 2 bytes per entry to the host
        self.codes[rows, cols] = codes.to(torch.int32).to(torch.int16).cpu().numpy().view(np.uint16)
        self.low[rows, cols], self.step[rows, cols] = low.cpu(), step.cpu()

    def finish(self) -> None:
        self.codes.flush()

    def decoded(self, rows: slice, cols: slice, device: torch.device | str = "cpu") -> torch.Tensor:
        """The stored baseline log-probabilities (B, t, V), renormalised, computed on `device`."""
        # the uint16 codes cross to the device as their int16 bit pattern (2 bytes per entry) and are widened there
        bits = torch.from_numpy(np.ascontiguousarray(self.codes[rows, cols]).view(np.int16)).to(device)
        codes = (bits.int() & 0xFFFF).float()
        low, step = self.low[rows, cols].to(device), self.step[rows, cols].to(device)
        return (low[..., None] + codes * step[..., None]).log_softmax(-1)

    def kl(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        lp = self.decoded(rows, cols, logits.device)
        return (lp.exp() * (lp - (logits - lse[..., None]))).sum(-1).cpu()

    def coverage(self) -> torch.Tensor:
        return torch.ones(self.shape[:2])

    def bytes_per_token(self) -> float:
        return 2.0 * self.shape[-1] + EXACT_TOKEN_BYTES


class MassStore:
    """Per token the likeliest log-probabilities up to a target mass (ragged), plus the log-mass of the rest."""

    def __init__(self, n_win: int, preds: int, vocab: int, plan: KLPlan) -> None:
        self.n_win, self.preds = n_win, preds
        self.cap = plan.entries_cap(vocab)
        self.target = 1.0 if plan.max_entries else plan.target
        self.counts = torch.zeros(n_win, preds, dtype=torch.int64)
        self.tail = torch.empty(n_win, preds)  # log of the baseline mass outside the kept entries
        self.kept = torch.empty(n_win, preds)  # baseline mass inside them (coverage)
        self._parts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.logp = self.ids = self.offsets = None

    def add(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> None:
        top, idx = logits.topk(self.cap, dim=-1)  # (B, t, cap), sorted
        lp = top - lse[..., None]
        cum = lp.exp().cumsum(-1)
        # the fewest entries whose mass reaches the target (all `cap` when the budget binds first)
        count = ((cum < self.target).sum(-1) + 1).clamp(max=self.cap)  # (B, t)
        mass = cum.gather(-1, (count - 1)[..., None]).squeeze(-1)
        tail = torch.log1p(-mass.clamp(max=1 - 1e-7))
        # what is kept goes to the host now: (B, t, cap) is small next to the (B, t, V) logits
        lp, idx, count = lp.cpu(), idx.to(torch.int32).cpu(), count.cpu()
        self.counts[rows, cols], self.kept[rows, cols], self.tail[rows, cols] = count, mass.cpu(), tail.cpu()
        keep = torch.arange(self.cap) < count[..., None]  # (B, t, cap)
        for w in range(rows.start, rows.stop):  # ragged rows, stored per window in position order
            b = w - rows.start
            self._parts[(w, cols.start)] = (lp[b][keep[b]], idx[b][keep[b]])

    def finish(self) -> None:
        order = sorted(self._parts)
        self.logp = torch.cat([self._parts[k][0] for k in order])  # (entries,)
        self.ids = torch.cat([self._parts[k][1] for k in order])
        self._parts.clear()
        self.offsets = torch.zeros(self.n_win * self.preds + 1, dtype=torch.int64)
        self.offsets[1:] = self.counts.flatten().cumsum(0)

    def kl(self, rows: slice, cols: slice, logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        b, t, vocab = logits.shape
        tokens = (torch.arange(rows.start, rows.stop)[:, None] * self.preds + torch.arange(cols.start, cols.stop))
        tokens = tokens.flatten()  # (b*t,) flat token numbers
        counts = self.offsets[tokens + 1] - self.offsets[tokens]
        local = torch.arange(tokens.numel()).repeat_interleave(counts)  # chunk token of each kept entry
        first = (counts.cumsum(0) - counts).repeat_interleave(counts)
        entry = self.offsets[tokens].repeat_interleave(counts) + torch.arange(local.numel()) - first
        device = logits.device  # the indices are built on the host, the gather runs where the logits are
        lp, ids, local = self.logp[entry].to(device), self.ids[entry].to(device).long(), local.to(device)
        lq = logits.reshape(-1, vocab)[local, ids] - lse.reshape(-1)[local]
        head = torch.zeros(b * t, device=device).index_add_(0, local, lp.exp() * (lp - lq))
        q_kept = torch.zeros(b * t, device=device).index_add_(0, local, lq.exp())
        lp_tail = self.tail[rows, cols].reshape(-1).to(device)
        lq_tail = torch.log((1 - q_kept).clamp(min=1e-12))
        return (head + lp_tail.exp() * (lp_tail - lq_tail)).view(b, t).cpu()

    def coverage(self) -> torch.Tensor:
        return self.kept

    def bytes_per_token(self) -> float:
        return ENTRY_BYTES * float(self.counts.double().mean()) + TOKEN_BYTES


def fall_back(plan: KLPlan, reason: str) -> KLPlan:
    """The plan a hidden store falls back to, with the reason recorded."""
    return replace(plan, mode=plan.fallback, fallback_reason=reason)


def capturing(store):
    """What a store records while the baseline pass runs (the hidden store: the head's input)."""
    return store.capturing() if hasattr(store, "capturing") else nullcontext()


def make_store(plan: KLPlan, n_win: int, preds: int, vocab: int, spill_dir: Path | None = None, model=None):
    """The store `plan` names; a hidden store raises `HiddenUnfit` when the model's head does not allow it."""
    if plan.mode == "hidden":
        return HiddenStore(n_win, preds, vocab, model, plan.hidden_dtype, spill_dir)
    if plan.mode == "full":
        return FullStore(n_win, preds, vocab)
    if plan.mode == "exact":
        return ExactStore(n_win, preds, vocab, spill_dir)
    if plan.mode == "mass":
        return MassStore(n_win, preds, vocab, plan)
    raise ValueError(f"unknown KL mode '{plan.mode}'")
