"""Structured pruning: whole attention heads or MLP intermediate channels, removed so the shapes shrink.

Units are ranked per layer and the same number is removed from every layer (FLAP's uniform "UL-UM" structure:
An et al., 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language Models", AAAI,
CASIA-IVA-Lab/FLAP lib/prune.py @ 9bbad71), which keeps one valid config for the whole model. Importance:
- 'magnitude': squared weight norm of every parameter the unit owns (its q/k/v rows and o columns, or its
  gate/up rows and down column).
- 'wanda': Wanda's |W_ij| * ||X_j|| summed over the output projection's input columns that belong to the unit
  (the Wanda-sp baseline; Sun et al., 2024, arXiv:2306.11695; FLAP's WIFN metric), with X from calibration.
Grouped-query attention: `head_unit: kv_group` removes a KV head with all the query heads that read it;
`head_unit: query` removes the same number of query heads from every group, so each KV head keeps serving a
whole group and `num_key_value_groups` shrinks. Modules are replaced (not resized in place) through the undo
log, and so are config and attention attributes, so restore is exact.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from doctor.architectures import Attention, Mlp, architecture_of
from doctor.compress.adapters import decoder_layers, linear_weight
from doctor.compress.capture import capture_layer_inputs
from doctor.compress.collectors import MIN_TOKENS, InputNormCollector
from doctor.compress.hooks import forward_hooks

log = logging.getLogger(__name__)


def attention_of(block: nn.Module) -> Attention:
    """Where the block's attention projections are and which head each row serves (its adapter's answer)."""
    return architecture_of(block).attention(block)


def mlps_of(block: nn.Module) -> list[Mlp]:
    """The block's feed-forward units (one, or every expert of a mixture)."""
    return architecture_of(block).mlps(block)


def mlp_of(block: nn.Module) -> Mlp:
    return mlps_of(block)[0]


def head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    """Row (or column) indices of the given heads in a projection laid out head after head."""
    if not heads:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


def shrink_linear(module: nn.Module, dim: str, keep: torch.Tensor) -> nn.Module:
    """A new linear layer (same class) keeping output rows (`dim='out'`) or input columns (`dim='in'`)."""
    w = linear_weight(module).detach()  # (out, in)
    keep = keep.to(w.device)
    w = w[keep] if dim == "out" else w[:, keep]
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias = bias.detach()[keep] if dim == "out" else bias.detach()
    out_f, in_f = w.shape
    conv1d = type(module).__name__ == "Conv1D"
    with torch.device("meta"):  # shapes only: the real tensors are assigned below, no RNG is consumed
        new = type(module)(out_f, in_f) if conv1d else nn.Linear(in_f, out_f, bias=bias is not None)
    grad = module.weight.requires_grad
    new.weight = nn.Parameter((w.t() if conv1d else w).contiguous().clone(), requires_grad=grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.clone(), requires_grad=grad)
    return new.train(module.training)


def input_norms(model: nn.Module, modules: list[list[nn.Module]], windows: torch.Tensor) -> list[list[torch.Tensor]]:
    """Wanda's ||X_j||_2 over calibration tokens for each input feature of `modules[i][k]` (layer i).

    An expert that saw fewer than `MIN_TOKENS` routed tokens gets uniform norms: its channels rank by magnitude.
    """
    inputs = capture_layer_inputs(model, windows)
    norms = []
    for block, layer_modules in zip(decoder_layers(model), modules, strict=True):
        collectors = [InputNormCollector(linear_weight(m).shape[1], device=inputs.hidden[0].device)
                      for m in layer_modules]
        hooks = [(m, lambda _m, args, c=c: c.add(args[0])) for m, c in zip(layer_modules, collectors, strict=True)]
        with forward_hooks(hooks, pre=True):
            outputs = inputs.run(block)
        for c in collectors:
            if c.tokens < MIN_TOKENS:
                c.uniform()
        norms.append([c.norm.cpu() for c in collectors])
        inputs = inputs.with_hidden(outputs)
    return norms


def _wanda_columns(out_module: nn.Module, norm: torch.Tensor) -> torch.Tensor:
    """Per input column of an output projection: sum_i |W_ij| * ||X_j||."""
    w = linear_weight(out_module).detach().float().cpu()
    return (w.abs() * norm.unsqueeze(0)).sum(0)  # (in,)


def _sq(module: nn.Module, dim: str) -> torch.Tensor:
    """Squared weight norm per output row (`dim='out'`) or per input column."""
    w = linear_weight(module).detach().float().cpu().pow(2)
    return w.sum(1) if dim == "out" else w.sum(0)


def head_scores(a: Attention, method: str, norm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance per query head and per KV head (the KV part is zero for 'wanda': it reads o's inputs only)."""
    hd = a.head_dim
    out = getattr(a.module, a.out)
    if method == "wanda":
        q = _wanda_columns(out, norm).reshape(a.heads, hd).sum(1)
        return q, torch.zeros(a.kv_heads)
    q = _sq(out, "in").reshape(a.heads, hd).sum(1)
    kv = torch.zeros(a.kv_heads)
    for attr, (q_of, kv_of) in a.inputs.items():
        rows = _sq(getattr(a.module, attr), "out")
        q.index_add_(0, q_of[q_of >= 0], rows[q_of >= 0])
        kv.index_add_(0, kv_of[kv_of >= 0], rows[kv_of >= 0])
    return q, kv


def channel_scores(m: Mlp, method: str, norm: torch.Tensor | None) -> torch.Tensor:
    out = getattr(m.module, m.out)
    if method == "wanda":
        return _wanda_columns(out, norm)
    score = _sq(out, "in")
    for attr, channel_of in m.inputs.items():
        score = score.index_add(0, channel_of, _sq(getattr(m.module, attr), "out"))
    return score
