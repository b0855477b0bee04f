"""Contrastive search (Su et al., "A Contrastive Framework for Neural Text Generation", NeurIPS 2022).

At each step the top-k tokens of the model's distribution are candidates; each is scored
    (1 - alpha) * p(v | x_<t)  -  alpha * max_j cos(h_v, h_j)
where h_v is the last-layer hidden state after appending v and h_j those of every earlier token (the
degeneration penalty). transformers 5 moved its implementation to a hub repository that cannot load offline,
so it is implemented here: one forward of the k candidates per step against a key/value cache repeated k
times, then the cache row of the winner is kept. alpha = 0 reduces to greedy decoding.
"""

from __future__ import annotations

import inspect

import torch

from doctor.errors import ModificationError


def _last_hidden(out) -> torch.Tensor:
    return out.hidden_states[-1]  # (B, T, H), after the final norm for HF decoders


def _cache_of(out):
    # transformers 5.2x names it `cache`; earlier releases `past_key_values`
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def _cache_kwarg(model: torch.nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def contrastive_search(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    *,
    top_k: int,
    alpha: float,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> list[int]:
    """New token ids after `prompt` (1, T), stopping after `max_new_tokens` or the end-of-text token."""
    out = model(input_ids=prompt, use_cache=True, output_hidden_states=True)
    cache, cache_kwarg = _cache_of(out), _cache_kwarg(model)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        raise ModificationError(
            f"contrastive search needs a key/value cache that can be repeated per candidate; "
            f"{type(model).__name__} returned {type(cache).__name__}"
        )
    context = _last_hidden(out)[0]  # (T, H) hidden states of every token so far
    logits = out.logits[0, -1].float()  # (V,)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits, dim=-1)
        top_p, top_ids = probs.topk(min(top_k, probs.numel()))  # (k,)
        k = top_ids.numel()
        cache.batch_repeat_interleave(k)
        step = model(input_ids=top_ids.view(k, 1), use_cache=True, output_hidden_states=True, **{cache_kwarg: cache})
        candidates = _last_hidden(step)[:, -1]  # (k, H)
        cos = torch.nn.functional.cosine_similarity(
            candidates.float().unsqueeze(1), context.float().unsqueeze(0), dim=-1
        )  # (k, T)
        score = (1.0 - alpha) * top_p - alpha * cos.max(dim=1).values
        best = int(score.argmax())  # first maximum on ties, like greedy's argmax
        cache = _cache_of(step)
        cache.batch_select_indices(torch.tensor([best], device=top_ids.device))
        token = int(top_ids[best])
        generated.append(token)
        context = torch.cat([context, candidates[best : best + 1]], dim=0)
        logits = step.logits[best, -1].float()
        if eos_token_id is not None and token == eos_token_id:
            break
    return generated
