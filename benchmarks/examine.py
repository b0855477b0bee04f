"""Speed of the examination machinery, as ratios measured in one run (these machines are noisy).

    python -m benchmarks.examine [--rounds 5] [--skip-large]

For the demo model and a random 8-layer, hidden-512 Llama with a 32K vocabulary, A and B are timed
alternately and the median of the per-round ratios is printed next to its target:
- perplexity pass / plain `model(input_ids)` loop over the same windows (target <= 1.11)
- baseline pass with the KL cache / plain loop (target <= 1.15)
- restoring the weights after RTN 4-bit / one plain pass (target <= 0.02)
- a whole `examine` of K calibration-free checkups / one plain pass (target <= 1.2 + 1.25 K)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.examination.runner import Options, examine
from doctor.metrics.evaluation import baseline_pass, compare_pass
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.patient import Patient, extract_facts, load_patient
from doctor.spec.checkup import Suite
from doctor.spec.modification import QuantizeSpec

K = 3


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_loop(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch):
            model(input_ids=windows[i : i + batch]).logits  # noqa: B018


def _suite(corpus: str, windows: int, batch: int) -> Suite:
    checkups = [
        {"id": f"rtn{b}", "modification": {"kind": "quantize", "bits": b, "group_size": 32}, "metrics": ["perplexity", "kl"]}
        for b in (8, 4, 3)[:K]
    ]
    return Suite.model_validate({"name": "bench", "eval": {"corpus": corpus, "max_windows": windows,
                                "batch_size": batch, "bootstrap": 200}, "checkups": checkups})


def bench(patient: Patient, windows: torch.Tensor, corpus: str, rounds: int, batch: int) -> dict[str, float]:
    model, vocab = patient.model, patient.facts.vocab
    backend = TorchBackend(model)
    _, cache = baseline_pass(backend, windows, vocab, batch_size=batch)
    suite = _suite(corpus, windows.shape[0], batch)
    ratios: dict[str, list[float]] = {"ppl": [], "baseline": [], "restore": [], "examine": []}
    for _ in range(rounds):
        plain = _timed(lambda: plain_loop(model, windows, batch))
        ratios["ppl"].append(_timed(lambda: compare_pass(backend, windows, cache, vocab, batch_size=batch,
                                                          with_kl=False)) / plain)
        plain = _timed(lambda: plain_loop(model, windows, batch))
        ratios["baseline"].append(_timed(lambda: baseline_pass(backend, windows, vocab, batch_size=batch)) / plain)
        ctx = ApplyContext(patient=patient, undo=UndoLog(), calibration=None, out_dir=Path("."))
        apply_modification(QuantizeSpec(method="rtn", bits=4, group_size=32), ctx)
        ratios["restore"].append(_timed(ctx.undo.restore) / plain)
        with tempfile.TemporaryDirectory() as out:
            plain = _timed(lambda: plain_loop(model, windows, batch))
            run = _timed(lambda out=out: examine(patient, suite, Options(out_dir=Path(out), use_predictor=False)))
            ratios["examine"].append(run / plain)
    return {k: statistics.median(v) for k, v in ratios.items()}


def random_llama() -> Patient:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512)
    model = LlamaForCausalLM(cfg).eval()

    class Tokenizer:  # byte-level ids spread over the vocabulary; enough for timing
        def __call__(self, text, return_tensors=None, **_):
            ids = [1] + [3 + (b * 97) % 31990 for b in text.encode("utf-8")]
            return {"input_ids": torch.tensor([ids])}

    return Patient(model=model, tokenizer=Tokenizer(), facts=extract_facts(model, "random-llama-8x512"), source="random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true", help="only the demo model")
    args = parser.parse_args()
    targets = {"ppl": 1.11, "baseline": 1.15, "restore": 0.02, "examine": 1.2 + 1.25 * K}
    cases = [("stories260k (demo)", load_patient(None), 16, 4)]
    if not args.skip_large:
        cases.append(("random llama 8x512, 32K vocab", random_llama(), 6, 2))
    print(f"{'model':32} {'measure':10} {'ratio':>8} {'target':>8}  ok")
    for name, patient, n_windows, batch in cases:
        seq = min(512, patient.facts.context or 512)
        text = resolve_corpus("tinystories-valid", demo=True, purpose="eval")
        windows = eval_windows(tokenize(text, patient.tokenizer), seq, n_windows)
        result = bench(patient, windows, "tinystories-valid", args.rounds, batch)
        for key, ratio in result.items():
            ok = "yes" if ratio <= targets[key] else "NO"
            print(f"{name:32} {key:10} {ratio:8.3f} {targets[key]:8.2f}  {ok}")


if __name__ == "__main__":
    main()
