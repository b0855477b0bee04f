"""Task and generation metrics: keys, intervals, hand-checked values, reproducibility, spread."""

from __future__ import annotations

import json
import math

import pytest
import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.metrics.generation import (
    GenerationRun,
    distinct,
    generate_samples,
    generation_metrics,
    repetition,
)
from doctor.spec.modification import DecodeSpec
from doctor.tasks import measure_tasks, spread
from doctor.tasks.stats import jackknife, wilson_interval

STRATEGIES = [
    None,
    DecodeSpec(strategy="beam", num_beams=2),
    DecodeSpec(strategy="sample", temperature=1.0, top_p=0.9, seed=0),
    DecodeSpec(strategy="contrastive"),
]


def small_tasks(tmp_path):
    names = tmp_path / "names.jsonl"
    names.write_text("\n".join(json.dumps(x) for x in [
        {"format": "model-doctor-task", "name": "mini-names", "type": "generation", "max_new_tokens": 8},
        {"prompt": "Once upon a time, there was a girl named Sue. She liked cats.", "answer": "Sue",
         "regex": r"\b(Sue)\b"},
        {"prompt": "Tom had a big red ball. He loved it.", "answer": "Tom", "regex": r"\b(Tom)\b"},
    ]) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(x) for x in [
        {"format": "model-doctor-task", "name": "mini-prompts", "type": "open"},
        {"prompt": "Once upon a time, there was a little bird."}, {"prompt": "One day, Ben went to the park."},
        {"prompt": "Lily saw a big tree."},
    ]) + "\n")
    return str(names), str(prompts)


def test_repetition_and_distinct_by_hand():
    assert repetition([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 - 4 / 5)
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert math.isnan(repetition([1, 2, 3]))
    assert distinct([[1, 1, 2], [2, 3]], 1) == pytest.approx(3 / 5)
    assert distinct([[1, 1, 2], [2, 3]], 2) == pytest.approx(3 / 3)


def test_measure_tasks_keys_and_intervals(demo_patient, tmp_path):
    names, prompts = small_tasks(tmp_path)
    out = measure_tasks(demo_patient, TorchBackend(demo_patient.model), ["tinystories-cloze", names, prompts], None,
                        limit=6)
    assert set(out) == {"acc:tinystories-cloze", "acc_norm:tinystories-cloze", "exact_match:mini-names"}
    assert out["acc:tinystories-cloze"].n == 6 and out["exact_match:mini-names"].n == 2
    for m in out.values():
        assert 0.0 <= m.lower <= m.value <= m.upper <= 1.0


@pytest.mark.parametrize("spec", STRATEGIES, ids=lambda s: s.strategy if s else "default")
def test_every_strategy_gives_identical_results_twice(demo_patient, tmp_path, spec):
    names, prompts = small_tasks(tmp_path)
    backend = TorchBackend(demo_patient.model)
    first = measure_tasks(demo_patient, backend, [names], spec)
    run1 = generate_samples(demo_patient, spec, [names, prompts], max_new_tokens=12)
    second = measure_tasks(demo_patient, backend, [names], spec)
    run2 = generate_samples(demo_patient, spec, [names, prompts], max_new_tokens=12)
    assert first == second
    assert run1.texts == run2.texts and run1.outputs == run2.outputs and len(run1.texts) == 3
    assert generation_metrics(run1, demo_patient) == generation_metrics(run2, demo_patient)


def test_generation_metrics_by_hand(demo_patient, tmp_path):
    _, prompts = small_tasks(tmp_path)
    run = generate_samples(demo_patient, DecodeSpec(strategy="sample", temperature=1.2, seed=5), [prompts],
                           max_new_tokens=10)
    assert run.tasks == ["mini-prompts"] and run.decode["strategy"] == "sample"
    m = generation_metrics(run, demo_patient)
    assert set(m) == {"repetition_rate", "distinct_1", "distinct_2", "mean_length", "generated_ppl"}
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids, new in zip(run.prompt_ids, run.outputs, strict=True):
            logp = torch.log_softmax(demo_patient.model(torch.tensor([ids + new])).logits[0].double(), -1)
            nll -= sum(float(logp[len(ids) + j - 1, t]) for j, t in enumerate(new))
            count += len(new)
    assert m["generated_ppl"].value == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert m["mean_length"].value == pytest.approx(count / len(run.outputs))
    assert m["distinct_1"].value == pytest.approx(distinct(run.outputs, 1))
    for key, value in m.items():
        assert value.n == len(run.outputs), key
        assert value.lower <= value.value <= value.upper, key


def test_the_bundled_prompts_are_used_when_no_open_task_is_named(demo_patient):
    run = generate_samples(demo_patient, None, ["tinystories-names"], max_new_tokens=4, limit=2)
    assert run.tasks == ["tinystories-prompts"] and len(run.texts) == 2


def test_undefined_metrics_are_left_out(demo_patient):
    run = GenerationRun(decode={"strategy": "greedy"}, tasks=["x"], prompts=["a"], prompt_ids=[[1, 403]],
                        outputs=[[]], texts=[""])
    m = generation_metrics(run, demo_patient)
    assert set(m) == {"mean_length"} and m["mean_length"].value == 0.0


def test_spread_by_hand():
    s = spread({"greedy": 0.5, "beam": 0.7, "sample": None})
    assert s["n"] == 2 and s["range"] == pytest.approx(0.2) and s["mean"] == pytest.approx(0.6)
    assert s["cv"] == pytest.approx(0.1 / 0.6) and (s["argmin"], s["argmax"]) == ("greedy", "beam")
    assert spread([1.0, 1.0])["cv"] == 0.0 and spread([])["range"] is None


def test_intervals():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0 < high < 0.35
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.65 < low < 1.0
    m = jackknife(5, lambda rows: float(len(rows)))  # constant across leave-one-out: zero width
    assert m.lower == m.upper == m.value == 5.0
