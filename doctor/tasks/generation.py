"""Generation under a `DecodeSpec`: greedy, beam search, sampling and contrastive search, reproducibly.

Greedy, beam and sampling run through `model.generate` with a generation config built from the spec alone, so
a checkpoint's own `generation_config.json` (a default temperature or top-p, a repetition penalty) cannot change
the strategy under test. Prompts run in left-padded batches of `BATCH_SIZE` (with the attention mask, so a
greedy or beam continuation is the one the prompt gets alone, up to float rounding). Sampling is seeded per
batch from (spec seed, index of the batch's first prompt) inside a forked RNG: the same prompts in the same order
give the same text, whatever the caller's random state. Contrastive search runs one prompt at a time through
`doctor.tasks.contrastive` (see there why).
"""

from __future__ import annotations

from typing import Any

import torch

from doctor.placement.offload import execution_device
from doctor.spec.modification import DecodeSpec
from doctor.tasks.contrastive import contrastive_search

CONTRASTIVE_TOP_K = 4  # Su et al. use k in 4..10 with alpha 0.6
_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0, "num_return_sequences": 1}


def resolve(decode: DecodeSpec | None) -> DecodeSpec:
    return decode if decode is not None else DecodeSpec()


def describe(spec: DecodeSpec) -> dict[str, Any]:
    """The strategy and the parameters that take effect for it (what a report should show)."""
    if spec.strategy == "beam":
        return {"strategy": "beam", "num_beams": spec.num_beams}
    if spec.strategy == "sample":
        return {
            "strategy": "sample",
            "temperature": spec.temperature,
            "top_k": spec.top_k,
            "top_p": spec.top_p,
            "seed": spec.seed,
        }
    if spec.strategy == "contrastive":
        return {"strategy": "contrastive", "penalty_alpha": spec.penalty_alpha, "top_k": contrastive_k(spec)}
    return {"strategy": "greedy"}


def contrastive_k(spec: DecodeSpec) -> int:
    return spec.top_k if spec.top_k is not None else CONTRASTIVE_TOP_K


def prompt_seed(spec: DecodeSpec, index: int) -> int:
    return (spec.seed * 1_000_003 + index) % (2**63 - 1)


def generation_config(spec: DecodeSpec, *, max_length: int, eos_token_id: int | None, pad_token_id: int | None):
    """A complete GenerationConfig for `spec` (greedy, beam or sample)."""
    from transformers import GenerationConfig

    kwargs: dict[str, Any] = dict(_NEUTRAL, max_length=max_length, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if spec.strategy == "beam":
        kwargs.update(do_sample=False, num_beams=spec.num_beams, length_penalty=1.0, early_stopping=False)
    elif spec.strategy == "sample":
        kwargs.update(
            do_sample=True,
            num_beams=1,
            temperature=spec.temperature,
            top_k=spec.top_k if spec.top_k is not None else 0,  # 0 disables transformers' default of 50
            top_p=spec.top_p if spec.top_p is not None else 1.0,
        )
    else:
        kwargs.update(do_sample=False, num_beams=1)
    return GenerationConfig(**kwargs)


def _context_limit(model: torch.nn.Module) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _special(tokenizer, name: str) -> int | None:
    value = getattr(tokenizer, name, None)
    return int(value) if value is not None else None


BATCH_SIZE = 8


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompt_ids: list[int],
    spec: DecodeSpec,
    *,
    max_new_tokens: int,
    index: int = 0,
) -> list[int]:
    """New token ids after `prompt_ids`, without the end-of-text token and anything after it."""
    return generate_batch(model, tokenizer, [prompt_ids], spec, max_new_tokens=max_new_tokens, first_index=index)[0]


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[list[int]],
    spec: DecodeSpec,
    *,
    max_new_tokens: int,
    batch_size: int = BATCH_SIZE,
    first_index: int = 0,
) -> list[list[int]]:
    """New token ids for every prompt. Greedy, beam and sampling run `batch_size` left-padded prompts per call;
    contrastive search runs one prompt at a time."""
    limit = _context_limit(model)
    if limit is not None:
        prompts = [p[-max(1, limit - 1) :] for p in prompts]
    eos = _special(tokenizer, "eos_token_id")
    step = 1 if spec.strategy == "contrastive" else max(1, batch_size)
    out: list[list[int]] = []
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        budget = max_new_tokens if limit is None else min(max_new_tokens, limit - max(len(p) for p in chunk))
        if budget <= 0:
            out.extend([] for _ in chunk)
            continue
        if spec.strategy == "contrastive":
            ids = torch.tensor(chunk, dtype=torch.long, device=execution_device(model))
            news = [contrastive_search(
                model, ids, top_k=contrastive_k(spec), alpha=spec.penalty_alpha, max_new_tokens=budget,
                eos_token_id=eos,
            )]
        else:
            news = _hf_generate(model, tokenizer, chunk, spec, budget, prompt_seed(spec, first_index + start))
        out.extend(new[: new.index(eos)] if eos is not None and eos in new else new for new in news)
    return out


def _hf_generate(model, tokenizer, chunk: list[list[int]], spec: DecodeSpec, budget: int, seed: int) -> list[list[int]]:
    """One left-padded batch through `model.generate`, seeded inside a forked RNG."""
    device = execution_device(model)
    eos, pad = _special(tokenizer, "eos_token_id"), _special(tokenizer, "pad_token_id")
    pad = pad if pad is not None else (eos if eos is not None else 0)
    width = max(len(p) for p in chunk)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], dtype=torch.long, device=device)
    config = generation_config(spec, max_length=width + budget, eos_token_id=eos, pad_token_id=pad)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        result = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return result[:, width:].tolist()


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return list(tokenizer(prompt)["input_ids"])


def decode_text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
