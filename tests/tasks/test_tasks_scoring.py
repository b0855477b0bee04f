"""Multiple-choice scoring against log-likelihoods computed by hand with the model's log_softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from doctor.backends.torch_backend import TorchBackend
from doctor.tasks.format import Header, MultipleChoiceItem, Task
from doctor.tasks.scoring import Request, encode_pair, loglikelihoods, pick, score_multiple_choice


def toy_ids(text: str) -> list[int]:
    """The toy tokenizer's encoding written out: BOS then one id per character."""
    return [1] + [3 + ord(c) % 125 for c in text]


def hand_loglikelihood(model, context: str, continuation: str) -> float:
    ctx, whole = toy_ids(context), toy_ids(context + continuation)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)  # (T, V)
    # token t is predicted at position t - 1
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole)))


def test_encode_pair_moves_trailing_space_into_the_continuation(tiny_llama):
    req = encode_pair(tiny_llama.tokenizer, "the cat ", "sat")
    assert req.context == toy_ids("the cat")
    assert req.continuation == toy_ids("the cat sat")[len(toy_ids("the cat")) :]


def test_choice_scores_match_hand_computed_log_likelihoods(tiny_llama):
    context, choices = "once there was a", ["cat", "dog", "horse"]
    item = MultipleChoiceItem(context=context, choices=choices, gold=1)
    task = Task(name="hand", path=None, header=Header(format="model-doctor-task"), multiple_choice=[item])
    scores = score_multiple_choice(task, tiny_llama.tokenizer, TorchBackend(tiny_llama.model), max_len=128)
    by_hand = [hand_loglikelihood(tiny_llama.model, context, " " + c) for c in choices]
    assert scores.lls[0] == pytest.approx(by_hand, abs=1e-4)
    # acc: highest sum; acc_norm: highest sum per character of the choice (lm-eval's len(choice))
    best = int(np.argmax(by_hand))
    best_norm = int(np.argmax(np.array(by_hand) / np.array([len(c) for c in choices])))
    assert scores.acc == [best == 1]
    assert scores.acc_norm == [best_norm == 1]


def test_batching_and_padding_do_not_change_scores(tiny_llama):
    tok = tiny_llama.tokenizer
    requests = [encode_pair(tok, "a" * n, " b" * m) for n, m in [(3, 1), (20, 4), (7, 2), (1, 9), (12, 1)]]
    backend = TorchBackend(tiny_llama.model)
    one = loglikelihoods(backend, requests, max_len=128, batch_size=1)
    many = loglikelihoods(backend, requests, max_len=128, batch_size=5, chunk=3)
    assert many == pytest.approx(one, abs=1e-5)


def test_long_inputs_keep_the_last_max_len_tokens(tiny_llama):
    request = Request(context=toy_ids("x" * 60), continuation=toy_ids("yz")[1:])
    whole = request.context + request.continuation
    kept = whole[-(32 + 1) :]  # the model sees kept[:-1]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_llama.model(torch.tensor([kept[:-1]])).logits[0].double(), dim=-1)
    expected = float(logp[-2, kept[-2]] + logp[-1, kept[-1]])
    got = loglikelihoods(TorchBackend(tiny_llama.model), [request], max_len=32)
    assert got[0] == pytest.approx(expected, abs=1e-4)


def test_length_normalisation_can_change_the_pick():
    # -4 over 2 characters is worse per character than -6 over 6
    assert pick([-4.0, -6.0], ["ab", "abcdef"]) == (0, 1)


@given(st.lists(st.floats(-50, 0, allow_nan=False, allow_subnormal=False), min_size=2, max_size=6), st.integers(1, 8))
def test_equal_length_choices_pick_the_same_for_acc_and_acc_norm(lls, length):
    choices = ["x" * length] * len(lls)
    best, best_norm = pick(lls, choices)
    assert best == best_norm == int(np.argmax(lls))


class FullLogitsBackend:
    """Any backend that only offers `logits_chunks` (as ONNX Runtime's does) scores the same."""

    name, provider = "plain", "cpu"

    def __init__(self, model) -> None:
        self.model = model

    def logits_chunks(self, ids, chunk):
        with torch.no_grad():
            logits = self.model(ids).logits.float().numpy()
        for start in range(0, ids.shape[1], chunk):
            yield start, torch.from_numpy(logits[:, start : start + chunk].copy())


def test_scoring_needs_only_logits_chunks(tiny_gpt2):
    item = MultipleChoiceItem(context="abc", choices=["d", "efg", "hi"], gold=0)
    task = Task(name="t", path=None, header=Header(format="model-doctor-task"), multiple_choice=[item] * 3)
    torch_scores = score_multiple_choice(task, tiny_gpt2.tokenizer, TorchBackend(tiny_gpt2.model), max_len=64)
    plain = score_multiple_choice(task, tiny_gpt2.tokenizer, FullLogitsBackend(tiny_gpt2.model), max_len=64, batch_size=2)
    assert np.allclose(plain.lls, torch_scores.lls, atol=1e-4, rtol=0)
    assert (plain.acc, plain.acc_norm) == (torch_scores.acc, torch_scores.acc_norm)
