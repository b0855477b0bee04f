"""Task metrics for one checkup: multiple-choice accuracy through a backend, closed-ended exact match.

Keys: `acc:<task>` and `acc_norm:<task>` for multiple-choice items, `exact_match:<task>` for closed-ended
generation items (decoded with the checkup's `DecodeSpec`, greedy when there is none). Open-ended items are not
scored here; `doctor.metrics.generation` turns them into generation-quality metrics.
"""

from __future__ import annotations

import logging

from doctor.results import Measurement
from doctor.spec.modification import DecodeSpec
from doctor.tasks.format import Task, load_task
from doctor.tasks.generation import decode_text, describe, encode_prompt, generate_batch, resolve
from doctor.tasks.scoring import score_multiple_choice
from doctor.tasks.stats import proportion

log = logging.getLogger(__name__)


def _context(patient) -> int:
    cfg = patient.model.config
    return patient.facts.context or getattr(cfg, "max_position_embeddings", None) or 2048


def continuation_text(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add to the prompt. Decoding the whole sequence keeps the leading space a
    SentencePiece tokenizer drops when new tokens are decoded alone."""
    prompt = decode_text(tokenizer, prompt_ids)
    whole = decode_text(tokenizer, prompt_ids + new_ids)
    return whole[len(prompt) :] if whole.startswith(prompt) else decode_text(tokenizer, new_ids)


def multiple_choice_metrics(task: Task, patient, backend, *, limit: int | None = None) -> dict[str, Measurement]:
    scores = score_multiple_choice(task, patient.tokenizer, backend, max_len=_context(patient), limit=limit)
    note = f"{task.name}: {len(scores.acc)} items, log-likelihood of each choice ({backend.name})"
    return {
        f"acc:{task.name}": proportion(scores.acc, note=note),
        f"acc_norm:{task.name}": proportion(scores.acc_norm, note=note + ", normalised by character length"),
    }


def exact_match(task: Task, patient, decode: DecodeSpec | None, *, limit: int | None = None) -> Measurement:
    spec = resolve(decode)
    items = task.generation[:limit]
    prompts = [encode_prompt(patient.tokenizer, item.prompt) for item in items]
    news = generate_batch(patient.model, patient.tokenizer, prompts, spec, max_new_tokens=task.header.max_new_tokens)
    hits = [
        task.exact_match(item, continuation_text(patient.tokenizer, ids, new))
        for item, ids, new in zip(items, prompts, news, strict=True)
    ]
    params = ", ".join(f"{k}={v}" for k, v in describe(spec).items() if v is not None)
    return proportion(hits, note=f"{task.name}: {len(items)} items, {params}")


def measure_tasks(
    patient, backend, task_refs: list[str], decode: DecodeSpec | None, *, limit: int | None = None
) -> dict[str, Measurement]:
    """Every task's metrics; `limit` caps the items per task type (for quick runs and tests)."""
    out: dict[str, Measurement] = {}
    for ref in task_refs:
        task = load_task(ref)
        if task.multiple_choice:
            out.update(multiple_choice_metrics(task, patient, backend, limit=limit))
        if task.generation:
            out[f"exact_match:{task.name}"] = exact_match(task, patient, decode, limit=limit)
        if task.open and not (task.multiple_choice or task.generation):
            log.debug("%s: open-ended only; scored by the generation metrics", task.name)
    return out
