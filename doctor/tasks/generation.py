"""Generation under a `DecodeSpec`: greedy, beam search, sampling and contrastive search, reproducibly.

Greedy, beam and sampling run through `model.generate` with a generation config built from the spec alone, so
a checkpoint's own `generation_config.json` (a default temperature or top-p, a repetition penalty) cannot change
the strategy under test. Sampling is seeded per prompt from (spec seed, prompt index) inside a forked RNG, so a
prompt's text does not depend on the other prompts or on the caller's random state. Contrastive search runs
through `doctor.tasks.contrastive` (see there why). Prompts are generated one at a time: no padding, so a
prompt's continuation is the same alone or in a task.
"""

from __future__ import annotations

from typing import Any

import torch

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


@torch.no_grad()
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
    limit = _context_limit(model)
    if limit is not None:
        prompt_ids = prompt_ids[-max(1, limit - 1) :]
        max_new_tokens = max(0, min(max_new_tokens, limit - len(prompt_ids)))
    if max_new_tokens == 0:
        return []
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    eos = _special(tokenizer, "eos_token_id")
    if spec.strategy == "contrastive":
        new = contrastive_search(
            model, ids, top_k=contrastive_k(spec), alpha=spec.penalty_alpha, max_new_tokens=max_new_tokens,
            eos_token_id=eos,
        )
    else:
        pad = _special(tokenizer, "pad_token_id")
        config = generation_config(
            spec, max_length=len(prompt_ids) + max_new_tokens, eos_token_id=eos, pad_token_id=pad if pad is not None else eos
        )
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(prompt_seed(spec, index))
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        new = out[0, len(prompt_ids) :].tolist()
    if eos is not None and eos in new:
        new = new[: new.index(eos)]
    return new


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return list(tokenizer(prompt)["input_ids"])


def decode_text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
