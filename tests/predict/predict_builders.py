"""Builders for the predictor tests: hand-built facts and examinations (no model is loaded)."""

from __future__ import annotations

from doctor.results import Baseline, CheckupResult, Environment, Examination, Measurement, ModelFacts, TextInfo


def facts(params: int, name: str = "patient", family: str | None = None, layers: int = 32, hidden: int = 4096,
          tokens: float | None = None) -> ModelFacts:
    return ModelFacts(id=name, architecture="LlamaForCausalLM", model_type="llama", params=params, layers=layers,
                      hidden=hidden, heads=8, kv_heads=4, vocab=512, dtype="float32", family=family,
                      training_tokens=tokens)


def demo_facts() -> ModelFacts:
    return facts(260_000, "stories260k", layers=5, hidden=64)


def checkup(cid: str, modification: dict, ratio: float | None, realized: dict | None = None,
            status: str = "ok") -> CheckupResult:
    metrics = {} if ratio is None else {"ppl_ratio": Measurement(value=ratio, lower=ratio * 0.995,
                                                                  upper=ratio * 1.005)}
    return CheckupResult(id=cid, modification=modification, realized=realized or {}, metrics=metrics,
                         status=status, verdict="pass" if status == "ok" else "error")


def examination(patient: ModelFacts, checkups: list[CheckupResult], corpus: str = "wikitext2-test",
                ppl: float = 5.47, seq_len: int = 2048) -> Examination:
    text = TextInfo(corpus=corpus, tokens=seq_len * 40, windows=40, seq_len=seq_len, seed=0)
    env = Environment(tool_version="0", python="3", platform="linux", libraries={}, device="cpu", backend="torch")
    return Examination(patient=patient, suite={"name": "test"}, environment=env, started="2025-01-01T00:00:00",
                       baseline=Baseline(metrics={"ppl": Measurement(value=ppl)}, text=text), checkups=checkups)
