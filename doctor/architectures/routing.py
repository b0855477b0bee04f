"""Where a mixture-of-experts model sends its tokens: router logits and chosen experts per MoE layer.

Serves expert pruning by routing frequency (the experts that receive the fewest calibration tokens go first,
the frequency criterion of Muzio et al., 2024, "SEER-MoE", arXiv:2404.05089) and the routing-shift metrics (how
many tokens change experts after a modification, and how far the router's distribution moved).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from doctor.architectures import architecture_of
from doctor.compress.adapters import decoder_layers
from doctor.compress.hooks import forward_hooks
from doctor.placement.offload import execution_device


@dataclass
class Routing:
    """One MoE layer's routing over some tokens."""

    layer: int
    logits: torch.Tensor  # (tokens, experts) float32
    chosen: torch.Tensor  # (tokens, top_k) expert indices

    @property
    def experts(self) -> int:
        return self.logits.shape[1]

    def frequency(self) -> torch.Tensor:
        """Fraction of routed (token, slot) pairs each expert receives, (experts,)."""
        counts = torch.bincount(self.chosen.flatten(), minlength=self.experts).float()
        return counts / counts.sum().clamp(min=1)


def routers(model: nn.Module) -> dict[int, nn.Module]:
    """The router of every MoE layer, by layer index (none for a dense model)."""
    found = {}
    for index, block in enumerate(decoder_layers(model)):
        router = architecture_of(block).router(block)
        if router is not None:
            found[index] = router
    return found


def _logits_and_choice(output, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 5 routers return (logits, weights, indices); older ones are linears returning logits."""
    if isinstance(output, tuple):
        logits, chosen = output[0], output[-1]
    else:
        logits = output
        chosen = torch.topk(logits, top_k, dim=-1).indices
    return logits.detach().float().reshape(-1, logits.shape[-1]), chosen.detach().reshape(logits.numel() // logits.shape[-1], -1)


def capture_routing(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> list[Routing]:
    """Routing of every MoE layer over `windows` (samples, seq_len), in one plain forward pass per batch."""
    found = routers(model)
    top_k = int(getattr(model.config, "num_experts_per_tok", 2) or 2)
    logits: dict[int, list[torch.Tensor]] = {i: [] for i in found}
    chosen: dict[int, list[torch.Tensor]] = {i: [] for i in found}

    def hook_for(index: int):
        def record(_m, _args, output) -> None:
            lg, ch = _logits_and_choice(output, top_k)
            logits[index].append(lg.cpu())
            chosen[index].append(ch.cpu())

        return record

    device = execution_device(model)
    with torch.no_grad(), forward_hooks([(r, hook_for(i)) for i, r in found.items()]):
        for start in range(0, windows.shape[0], batch_size):
            model(input_ids=windows[start:start + batch_size].to(device), use_cache=False)
    return [Routing(i, torch.cat(logits[i]), torch.cat(chosen[i])) for i in found]


def routing_shift(base: list[Routing], current: list[Routing]) -> dict[str, float]:
    """How routing moved, pooled over MoE layers and tokens.

    - `routing_changed`: fraction of tokens whose set of chosen experts differs;
    - `router_kl`: mean KL(p_base || p_current) of the router's softmax distributions;
    - `expert_load_shift`: mean total-variation distance between the layers' expert load distributions.
    Layers whose expert count changed (expert pruning) are left out; with none left the result is empty.
    """
    changed = kl = load = 0.0
    tokens = 0
    pairs = [(b, c) for b, c in zip(base, current, strict=True) if b.experts == c.experts]
    for b, c in pairs:
        same = (b.chosen.sort(-1).values == c.chosen.sort(-1).values).all(-1)
        changed += float((~same).sum())
        kl += float(F.kl_div(F.log_softmax(c.logits, -1), F.log_softmax(b.logits, -1), log_target=True,
                             reduction="sum"))
        load += 0.5 * float((b.frequency() - c.frequency()).abs().sum())
        tokens += b.chosen.shape[0]
    if not pairs:
        return {}
    return {"routing_changed": changed / tokens, "router_kl": kl / tokens, "expert_load_shift": load / len(pairs)}
