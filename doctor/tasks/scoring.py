"""Log-likelihood scoring of continuations through a `Backend`, and multiple-choice accuracy.

Follows lm-evaluation-harness (Gao et al., "A framework for few-shot language model evaluation", and
`lm_eval/api/model.py` / `models/huggingface.py`): trailing spaces of the context move into the continuation,
`context + continuation` is tokenized once and the continuation is the tokens past the context's; the input is
the last `max_len + 1` tokens minus the final one. `acc` picks the choice with the highest summed log-likelihood,
`acc_norm` the highest sum divided by the choice's length in characters (`len(choice)` in lm-eval; its docs call
this byte-length normalisation; the two agree on ASCII). One difference: the tokenizer's own special tokens are
kept (a BOS where the tokenizer adds one), the convention the model was trained with and the one the
perplexity protocol uses.

Requests are sorted by length and right-padded into batches: for a causal model, padding after the last real
token cannot change the logits before it, so no attention mask is needed and any backend works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from doctor.tasks.format import MultipleChoiceItem, Task


@dataclass(frozen=True)
class Request:
    context: list[int]  # token ids, at least one (a BOS or the first context token)
    continuation: list[int]  # token ids scored given the context


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> Request:
    """Split `context + continuation` tokens at the context's length (lm-eval's `_encode_pair`)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    if not ctx:
        # no BOS and an empty context: condition on the end-of-text token as lm-eval does
        eos = getattr(tokenizer, "eos_token_id", None)
        ctx = [eos if eos is not None else 0]
        whole = ctx + whole
    return Request(context=ctx, continuation=whole[len(ctx) :])


@torch.no_grad()
def loglikelihoods(
    backend, requests: Sequence[Request], *, max_len: int, batch_size: int = 16, chunk: int = 256, pad_id: int = 0
) -> list[float]:
    """Sum of log p(continuation | context) for each request, in the order given."""
    out = [0.0] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context) - len(requests[i].continuation))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        rows, targets, spans = [], [], []
        for i in batch:
            whole = (requests[i].context + requests[i].continuation)[-(max_len + 1) :]
            n_cont = min(len(requests[i].continuation), len(whole) - 1)
            rows.append(whole[:-1])
            targets.append(whole[1:])
            spans.append((len(whole) - 1 - n_cont, len(whole) - 1))  # target positions of the continuation
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        tgt = torch.full((len(rows), width), -1, dtype=torch.long)
        for r, (row, target, (a, b)) in enumerate(zip(rows, targets, spans, strict=True)):
            ids[r, : len(row)] = torch.tensor(row)
            tgt[r, a:b] = torch.tensor(target[a:b])
        sums = torch.zeros(len(rows), dtype=torch.float64)
        for pos, logits in backend.logits_chunks(ids, chunk):
            t = tgt[:, pos : pos + logits.shape[1]].to(logits.device)  # (B, t)
            if not (t >= 0).any():
                continue
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, t, V)
            picked = logp.gather(-1, t.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, t)
            # summed in float32 where the logits are (no float64 on a GPU), accumulated in float64 on the host
            sums += torch.where(t >= 0, picked, torch.zeros_like(picked)).sum(dim=1).cpu().double()
        for r, i in enumerate(batch):
            out[i] = float(sums[r])
    return out


@dataclass
class ChoiceScores:
    """Per item: the summed log-likelihood of every choice, and whether acc / acc_norm picked gold."""

    lls: list[list[float]]
    acc: list[bool]
    acc_norm: list[bool]


def pick(lls: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(argmax of lls, argmax of lls / character length); ties go to the first choice, as np.argmax does."""
    arr = np.asarray(lls, dtype=float)
    lengths = np.array([float(len(c)) for c in choices])
    return int(np.argmax(arr)), int(np.argmax(arr / lengths))


def score_multiple_choice(
    task: Task, tokenizer, backend, *, max_len: int, batch_size: int = 16, limit: int | None = None
) -> ChoiceScores:
    """Score every choice of every multiple-choice item; one batch holds candidates of several items."""
    items: list[MultipleChoiceItem] = task.multiple_choice[:limit]
    delimiter = task.header.target_delimiter
    requests, owners = [], []
    for k, item in enumerate(items):
        for choice in item.choices:
            requests.append(encode_pair(tokenizer, item.context, delimiter + choice))
            owners.append(k)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0)
    flat = loglikelihoods(backend, requests, max_len=max_len, batch_size=batch_size, pad_id=pad)
    lls: list[list[float]] = [[] for _ in items]
    for owner, value in zip(owners, flat, strict=True):
        lls[owner].append(value)
    acc, acc_norm = [], []
    for item, scores in zip(items, lls, strict=True):
        best, best_norm = pick(scores, item.choices)
        acc.append(best == item.gold)
        acc_norm.append(best_norm == item.gold)
    return ChoiceScores(lls=lls, acc=acc, acc_norm=acc_norm)
