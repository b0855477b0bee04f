"""Decoding strategies: the known greedy continuation, reproducibility, and contrastive search by definition."""

from __future__ import annotations

import json

import pytest
import torch

from doctor.resources import DEMO_MODEL
from doctor.spec.modification import DecodeSpec
from doctor.tasks.contrastive import contrastive_search
from doctor.tasks.generation import encode_prompt, generate, generate_batch
from doctor.tasks.measure import continuation_text

STRATEGIES = [
    DecodeSpec(strategy="greedy"),
    DecodeSpec(strategy="beam", num_beams=3),
    DecodeSpec(strategy="sample", temperature=1.0, seed=0),
    DecodeSpec(strategy="sample", temperature=0.8, top_k=20, top_p=0.9, seed=3),
    DecodeSpec(strategy="contrastive", penalty_alpha=0.6, top_k=4),
]


def test_greedy_reproduces_the_model_readme_continuation(demo_patient):
    known = json.loads((DEMO_MODEL / "verification.json").read_text())["greedy"]
    tok = demo_patient.tokenizer
    ids = encode_prompt(tok, known["prompt"])
    new = generate(demo_patient.model, tok, ids, DecodeSpec(), max_new_tokens=known["max_new_tokens"])
    assert tok.decode(ids + new, skip_special_tokens=True) == known["text"]


@pytest.mark.parametrize("spec", STRATEGIES, ids=lambda s: s.strategy)
def test_every_strategy_repeats_exactly_and_leaves_the_global_rng_alone(demo_patient, spec):
    ids = encode_prompt(demo_patient.tokenizer, "Once upon a time, there was a little dog.")
    state = torch.get_rng_state()
    first = generate(demo_patient.model, demo_patient.tokenizer, ids, spec, max_new_tokens=16, index=2)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1234)  # the caller's random state must not matter
    second = generate(demo_patient.model, demo_patient.tokenizer, ids, spec, max_new_tokens=16, index=2)
    assert first == second and 0 < len(first) <= 16


def test_sampling_depends_on_seed_and_prompt_index(tiny_llama):
    ids = [1, 5, 9, 14]
    spec = DecodeSpec(strategy="sample", temperature=2.0)
    draws = {
        tuple(generate(tiny_llama.model, tiny_llama.tokenizer, ids, s, max_new_tokens=12, index=i))
        for s, i in [(spec, 0), (spec, 1), (spec.model_copy(update={"seed": 1}), 0)]
    }
    assert len(draws) == 3


def test_the_checkpoint_generation_config_cannot_change_the_strategy(tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    ids = [1, 7, 8, 9]
    before = generate(model, tok, ids, DecodeSpec(), max_new_tokens=10)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.repetition_penalty = 3.0
    assert generate(model, tok, ids, DecodeSpec(), max_new_tokens=10) == before


def naive_contrastive(model, ids: list[int], k: int, alpha: float, steps: int) -> list[int]:
    """Su et al.'s definition without a cache: re-run the whole sequence for every candidate."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            out = model(torch.tensor([seq]), output_hidden_states=True)
            probs = torch.softmax(out.logits[0, -1].double(), -1)
            top_p, top_ids = probs.topk(k)
            past = out.hidden_states[-1][0].double()  # (T, H)
            scores = []
            for p, v in zip(top_p.tolist(), top_ids.tolist(), strict=True):
                h = model(torch.tensor([seq + [v]]), output_hidden_states=True).hidden_states[-1][0, -1].double()
                penalty = torch.nn.functional.cosine_similarity(h.unsqueeze(0), past, dim=-1).max()
                scores.append((1 - alpha) * p - alpha * float(penalty))
            seq.append(top_ids.tolist()[max(range(k), key=lambda i: (scores[i], -i))])
    return seq[len(ids) :]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_contrastive_search_matches_its_definition(request, fixture):
    model = request.getfixturevalue(fixture).model
    ids = [1, 20, 33, 47, 20, 33]
    got = contrastive_search(model, torch.tensor([ids]), top_k=4, alpha=0.6, max_new_tokens=8)
    assert got == naive_contrastive(model, ids, k=4, alpha=0.6, steps=8)


def test_contrastive_search_without_penalty_is_greedy(demo_patient):
    tok = demo_patient.tokenizer
    ids = encode_prompt(tok, "Tom had a red ball.")
    greedy = generate(demo_patient.model, tok, ids, DecodeSpec(), max_new_tokens=24)
    plain = generate(demo_patient.model, tok, ids, DecodeSpec(strategy="contrastive", penalty_alpha=0.0), max_new_tokens=24)
    assert plain == greedy


def test_generation_stops_at_the_context_limit_and_drops_end_of_text(demo_patient):
    tok = demo_patient.tokenizer
    context = demo_patient.model.config.max_position_embeddings
    ids = [1] + [403] * (context - 4)
    new = generate(demo_patient.model, tok, ids, DecodeSpec(), max_new_tokens=50)
    assert len(new) <= context - len(ids) and tok.eos_token_id not in new


def test_continuation_text_keeps_the_leading_space(demo_patient):
    tok = demo_patient.tokenizer
    ids = encode_prompt(tok, "Once upon a time")
    new = encode_prompt(tok, "Once upon a time there")[len(ids) :]
    assert continuation_text(tok, ids, new) == " there"


@pytest.mark.parametrize("spec", STRATEGIES[:2], ids=lambda s: s.strategy)
def test_left_padded_batches_give_each_prompt_its_own_continuation(demo_patient, spec):
    tok = demo_patient.tokenizer
    prompts = [encode_prompt(tok, p) for p in ("Tom ran.", "Once upon a time, there was a big red dog.", "Sue")]
    alone = [generate(demo_patient.model, tok, ids, spec, max_new_tokens=10) for ids in prompts]
    assert generate_batch(demo_patient.model, tok, prompts, spec, max_new_tokens=10, batch_size=3) == alone
