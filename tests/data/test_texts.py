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


def test_reference_sampler_draws_as_the_gptq_loaders():
    import random

    ids = torch.arange(1000)
    random.seed(3)  # IST-DASLab/gptq datautils: random.seed(seed), then randint(0, n - seqlen - 1) per sample
    starts = [random.randint(0, 1000 - 50 - 1) for _ in range(6)]
    windows = calibration_windows(ids, 6, 50, seed=3, sampler="reference")
    assert [int(w[0]) for w in windows] == starts


def test_literature_preset_is_128_windows_of_the_context(demo_patient):
    import pytest

    from doctor.data.calibration import CalibrationProvider
    from doctor.spec.modification import CalibrationSpec

    spec = CalibrationSpec(corpus="tinystories-calib", preset="literature", seed=1)
    cal = CalibrationProvider(demo_patient, CalibrationSpec(), default_seq_len=64)(spec)
    assert tuple(cal.windows.shape) == (128, 512)  # the demo's context is 512 (< 2048), not the eval window
    assert cal.info.preset == "literature" and cal.info.windows == 128
    fast = CalibrationProvider(demo_patient, CalibrationSpec(), default_seq_len=64)(None)
    assert tuple(fast.windows.shape) == (32, 64) and fast.info.preset == "fast"
    with pytest.raises(ValueError, match="literature"):
        CalibrationSpec(preset="literature", samples=16)
