"""Running statistics of a linear layer's inputs, accumulated batch by batch in float32.

- `HessianCollector`: H = mean over calibration tokens of 2 x x^T, updated as a running mean like `add_batch`
  in GPTQ (Frantar et al., 2022, IST-DASLab/gptq) and SparseGPT. GPTQ averages over sequences, we average over
  tokens; the scale cancels because dampening is relative to mean(diag H).
- `InputNormCollector`: per input feature, the squared L2 norm of that feature over all calibration tokens,
  Wanda's ||X_j||_2 (Sun et al., 2023, locuslab/wanda), kept as a running mean for numerical range.
- `ActivationMagnitudeCollector`: per input feature, mean |x| over tokens, AWQ's activation scale
  (Lin et al., 2023, mit-han-lab/llm-awq `get_act_scale`).
- `InputCollector`: the raw inputs themselves, for solvers that need them (memory: tokens x features).

A linear that sees fewer than `MIN_TOKENS` calibration tokens (an expert the router rarely picks) cannot have
meaningful statistics; `uniform()` replaces them by those of white unit-variance inputs, with which GPTQ is
round-to-nearest, Wanda and SparseGPT rank by magnitude and AWQ does not scale. The fallback is counted and
reported.
"""

from __future__ import annotations

import math

import torch

MIN_TOKENS = 16  # fewer calibration tokens than this: statistics fall back to `uniform()`


class Collector:
    """Base: `add(x)` with a layer input of shape (..., features)."""

    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        self.features = features
        self.device = torch.device(device)
        self.tokens = 0

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.features:
            raise ValueError(f"input has {x.shape[-1]} features, collector expects {self.features}")
        return x.detach().reshape(-1, self.features).to(self.device, torch.float32)

    def add(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def uniform(self) -> None:
        """Replace the statistics by those of white unit-variance inputs (the few-token fallback)."""
        raise NotImplementedError

    def _mix(self, n: int) -> float:
        """Weight of the old running mean when `n` new tokens arrive (and count them)."""
        old = self.tokens
        self.tokens += n
        return old / self.tokens


class HessianCollector(Collector):
    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        super().__init__(features, device)
        self.H = torch.zeros(features, features, dtype=torch.float32, device=self.device)

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        if not rows.shape[0]:
            return
        self.H.mul_(self._mix(rows.shape[0]))
        rows = rows * math.sqrt(2.0 / self.tokens)
        self.H.addmm_(rows.t(), rows)

    def uniform(self) -> None:
        self.tokens = max(self.tokens, 1)
        self.H = 2 * torch.eye(self.features, dtype=torch.float32, device=self.device)


class InputNormCollector(Collector):
    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        super().__init__(features, device)
        self.mean_sq = torch.zeros(features, dtype=torch.float32, device=self.device)

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        if not rows.shape[0]:
            return
        keep = self._mix(rows.shape[0])
        self.mean_sq.mul_(keep).add_(rows.pow(2).sum(0) / self.tokens)

    def uniform(self) -> None:
        self.tokens = max(self.tokens, 1)
        self.mean_sq = torch.ones(self.features, dtype=torch.float32, device=self.device)

    @property
    def norm(self) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens, per input feature j."""
        return (self.mean_sq * self.tokens).sqrt()


class ActivationMagnitudeCollector(Collector):
    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        super().__init__(features, device)
        self.mean_abs = torch.zeros(features, dtype=torch.float32, device=self.device)

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        if not rows.shape[0]:
            return
        keep = self._mix(rows.shape[0])
        self.mean_abs.mul_(keep).add_(rows.abs().sum(0) / self.tokens)

    def uniform(self) -> None:
        self.tokens = max(self.tokens, 1)
        self.mean_abs = torch.ones(self.features, dtype=torch.float32, device=self.device)


class InputCollector(Collector):
    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        super().__init__(features, device)
        self.chunks: list[torch.Tensor] = []

    def add(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        self.tokens += rows.shape[0]
        self.chunks.append(rows)

    @property
    def inputs(self) -> torch.Tensor:
        """All inputs seen, (tokens, features)."""
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0, self.features, device=self.device)
