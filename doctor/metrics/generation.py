"""Open-ended generation quality: repetition, diversity, length, and the baseline model's perplexity of it.

- `repetition_rate`: seq-rep-n of Welleck et al. ("Neural Text Generation with Unlikelihood Training", 2019):
  per continuation, 1 - distinct n-grams / n-grams (n = 4), averaged over continuations with at least n tokens.
- `distinct_1`, `distinct_2`: distinct-n of Li et al. ("A Diversity-Promoting Objective Function for Neural
  Conversation Models", 2016): distinct n-grams / n-grams over all continuations together.
- `mean_length`: generated tokens per prompt (up to the end-of-text token).
- `generated_ppl`: perplexity of the continuations given their prompts under the BASELINE model, as in the
  contrastive search paper's "generation perplexity" (Su et al., 2022). The runner calls `generation_metrics`
  after restoring the model, so a modified model is judged by the unmodified one.

All n-grams are over model tokens. Intervals: a seeded percentile bootstrap over prompts; a jackknife over
prompts for distinct-n (a bootstrap would duplicate texts and so deflate it).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from doctor.results import Measurement
from doctor.spec.modification import DecodeSpec
from doctor.tasks.format import OpenItem, load_task
from doctor.tasks.generation import describe, encode_prompt, generate_batch, resolve
from doctor.tasks.measure import continuation_text
from doctor.tasks.scoring import Request, loglikelihoods
from doctor.tasks.stats import bootstrap, jackknife

log = logging.getLogger(__name__)
DEFAULT_PROMPTS = "tinystories-prompts"
REPETITION_N = 4


@dataclass
class GenerationRun:
    """Continuations of the open-ended prompts under one decoding strategy (token ids and text)."""

    decode: dict[str, Any]
    tasks: list[str]
    prompts: list[str] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)  # new tokens, end-of-text excluded
    texts: list[str] = field(default_factory=list)
    max_new_tokens: int = 48
    seconds: float = 0.0

    def samples(self, limit: int = 3) -> list[dict[str, str]]:
        """A few prompt/continuation pairs for a report."""
        return [{"prompt": p, "text": t} for p, t in zip(self.prompts[:limit], self.texts[:limit], strict=True)]


def _open_items(task_refs: list[str]) -> tuple[list[str], list[OpenItem]]:
    names, items = [], []
    for ref in task_refs:
        task = load_task(ref)
        if task.open:
            names.append(task.name)
            items.extend(task.open)
    if not items:
        task = load_task(DEFAULT_PROMPTS)
        names, items = [task.name], list(task.open)
    return names, items


def generate_samples(
    patient, decode: DecodeSpec | None, task_refs: list[str], max_new_tokens: int = 48, *, limit: int | None = None
) -> GenerationRun:
    """Generate for every open-ended prompt in `task_refs` (the bundled prompts when none is named) with the
    model as it is now (modified, when the runner calls it inside a checkup)."""
    spec = resolve(decode)
    names, items = _open_items(task_refs)
    run = GenerationRun(decode=describe(spec), tasks=names, max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    items = items[:limit]
    prompts = [encode_prompt(patient.tokenizer, item.prompt) for item in items]
    news = generate_batch(patient.model, patient.tokenizer, prompts, spec, max_new_tokens=max_new_tokens)
    for item, ids, new in zip(items, prompts, news, strict=True):
        run.prompts.append(item.prompt)
        run.prompt_ids.append(ids)
        run.outputs.append(new)
        run.texts.append(continuation_text(patient.tokenizer, ids, new))
    run.seconds = time.perf_counter() - start
    return run


def ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition(tokens: list[int], n: int = REPETITION_N) -> float:
    """1 - distinct n-grams / n-grams of one sequence; NaN when it has fewer than n tokens."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else math.nan


def distinct(outputs: list[list[int]], n: int) -> float:
    """Distinct n-grams over all outputs / n-grams over all outputs."""
    total: Counter = Counter()
    for tokens in outputs:
        total.update(ngrams(tokens, n))
    count = sum(total.values())
    return len(total) / count if count else math.nan


def _distinct_metric(run: GenerationRun, n: int, note: str) -> Measurement:
    return jackknife(len(run.outputs), lambda rows: distinct([run.outputs[i] for i in rows], n), note=note)


def _ratio_exp(nll: np.ndarray, tokens: np.ndarray) -> float:
    total = tokens.sum()
    return float(math.exp(nll.sum() / total)) if total else math.nan


def generated_perplexity(run: GenerationRun, patient, note: str) -> Measurement:
    from doctor.backends.torch_backend import TorchBackend

    keep = [i for i, out in enumerate(run.outputs) if out]
    if not keep:
        return Measurement(value=math.nan, n=0, note=note)
    requests = [Request(context=run.prompt_ids[i], continuation=run.outputs[i]) for i in keep]
    cfg = patient.model.config
    max_len = patient.facts.context or getattr(cfg, "max_position_embeddings", None) or 2048
    pad = getattr(patient.tokenizer, "eos_token_id", None) or 0
    lls = loglikelihoods(TorchBackend(patient.model), requests, max_len=max_len, pad_id=pad)
    nll = -np.asarray(lls)
    tokens = np.asarray([len(run.outputs[i]) for i in keep], dtype=float)
    return bootstrap([nll, tokens], _ratio_exp, note=note)


def generation_metrics(run: GenerationRun, patient) -> dict[str, Measurement]:
    """Quality of `run`'s continuations; call with the model restored to its baseline weights. A metric that
    is undefined (nothing generated, no continuation of n tokens) is left out rather than recorded as NaN."""
    params = ", ".join(f"{k}={v}" for k, v in run.decode.items() if v is not None)
    note = f"{len(run.outputs)} prompts ({', '.join(run.tasks)}), up to {run.max_new_tokens} new tokens, {params}"
    reps = np.asarray([repetition(out) for out in run.outputs], dtype=float)
    reps = reps[np.isfinite(reps)]
    lengths = np.asarray([len(out) for out in run.outputs], dtype=float)
    metrics = {
        "repetition_rate": bootstrap([reps], _mean, note=note + f"; {len(reps)} continuations of >= {REPETITION_N} tokens"),
        "distinct_1": _distinct_metric(run, 1, note),
        "distinct_2": _distinct_metric(run, 2, note),
        "mean_length": bootstrap([lengths], _mean, note=note),
        "generated_ppl": generated_perplexity(run, patient, note + "; perplexity under the baseline model"),
    }
    dropped = [k for k, m in metrics.items() if not math.isfinite(m.value)]
    if dropped:
        log.warning("generation metrics undefined for %s (%s)", ", ".join(dropped), note)
    return {k: m for k, m in metrics.items() if k not in dropped}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan
