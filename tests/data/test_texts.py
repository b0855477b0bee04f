"""Evaluation text: a prefix encoding gives exactly the ids of the whole text's encoding where they are used."""

from __future__ import annotations

import pytest
import torch

from doctor.data.texts import CORPORA, calibration_windows, eval_windows, resolve_corpus, tokenize


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_prefix_tokenization_equals_whole_text(demo_patient, name):
    text = resolve_corpus(name, demo=True, purpose="eval")
    whole = tokenize(text, demo_patient.tokenizer)
    for needed in (2048, 16384):
        prefix = tokenize(text, demo_patient.tokenizer, needed)
        assert prefix.numel() >= min(needed, whole.numel())
        assert torch.equal(prefix[:needed], whole[:needed])


def test_windows_and_calibration_are_deterministic():
    ids = torch.arange(1000)
    assert eval_windows(ids, 100, 3).tolist() == ids[:300].view(3, 100).tolist()
    a = calibration_windows(ids, 4, 50, seed=1)
    assert torch.equal(a, calibration_windows(ids, 4, 50, seed=1))
    assert not torch.equal(a, calibration_windows(ids, 4, 50, seed=2))
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 50)) for row in a)
