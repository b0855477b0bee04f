"""ONNX Runtime (CPU) against PyTorch: tokens per second of the evaluation pass, same windows, same threads.

For the bundled demo model and a random 8-layer, hidden-512 Llama with a 32K vocabulary, the fp32 export is
timed against the eager model in alternating A/B rounds (the order flips every round, so drift in machine load
hits both sides alike), and the median of the per-round ratios is reported. Two timings per side:

- `pass`: the runner's evaluation pass (`doctor.metrics.evaluation.baseline_pass`: logits, log-softmax, NLL, KL cache),
  which is what an examination spends its time on; the acceptance target (>= 0.7x torch) applies to this.
- `forward`: logits only, to show the backends' difference undiluted by the shared post-processing.

    python -m benchmarks.onnx_throughput                 # both models
    python -m benchmarks.onnx_throughput --models demo --rounds 3 --windows 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

MODELS = ("demo", "random-8x512")
TARGET = 0.7


def _random_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _setup(name: str, windows: int, seq_len: int):
    from doctor.data.texts import eval_windows, resolve_corpus, tokenize
    from doctor.patient import Patient, extract_facts, load_patient

    if name == "demo":
        patient = load_patient(None)
        ids = tokenize(resolve_corpus("auto", demo=True, purpose="eval"), patient.tokenizer)
        return patient, eval_windows(ids, min(seq_len, patient.facts.context or seq_len), windows)
    model = _random_llama()
    patient = Patient(model=model, tokenizer=None, facts=extract_facts(model, name), source=name)
    gen = torch.Generator().manual_seed(0)
    return patient, torch.randint(3, patient.facts.vocab, (windows, seq_len), generator=gen)


def _timers(backend, windows: torch.Tensor, vocab: int, batch_size: int):
    from doctor.metrics.evaluation import baseline_pass

    def evaluation_pass() -> float:
        start = time.perf_counter()
        baseline_pass(backend, windows, vocab, batch_size=batch_size)
        return time.perf_counter() - start

    def forward() -> float:
        start = time.perf_counter()
        for b0 in range(0, windows.shape[0], batch_size):
            for _ in backend.logits_chunks(windows[b0 : b0 + batch_size], windows.shape[1]):
                pass
        return time.perf_counter() - start

    return {"pass": evaluation_pass, "forward": forward}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    from doctor.backends.torch_backend import TorchBackend
    from doctor.onnx.backend import OrtBackend
    from doctor.onnx.export import export_model

    patient, windows = _setup(name, args.windows, args.seq_len)
    exported = export_model(patient.model, args.cache)
    backends = {
        "torch": TorchBackend(patient.model),
        "onnx": OrtBackend(exported.path, device="cpu", threads=args.threads),
    }
    timers = {k: _timers(b, windows, patient.facts.vocab, args.batch_size) for k, b in backends.items()}
    tokens = windows.numel()
    result = {"model": name, "tokens": tokens, "windows": list(windows.shape), "threads": args.threads,
              "export_seconds": round(exported.seconds, 1), "export_cached": exported.cached}
    for kind in ("pass", "forward"):
        for timer in timers.values():
            timer[kind]()  # warm-up: allocations, ORT's first-run setup
        rounds = []
        for i in range(args.rounds):
            order = ("torch", "onnx") if i % 2 == 0 else ("onnx", "torch")
            seconds = {side: timers[side][kind]() for side in order}
            rounds.append({side: tokens / s for side, s in seconds.items()})
        ratios = [r["onnx"] / r["torch"] for r in rounds]
        result[kind] = {
            "torch_tokens_per_s": statistics.median(r["torch"] for r in rounds),
            "onnx_tokens_per_s": statistics.median(r["onnx"] for r in rounds),
            "median_ratio": statistics.median(ratios),
            "ratios": [round(x, 3) for x in ratios],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated from {MODELS}")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cache", type=Path, default=Path(".doctor-cache/bench-onnx"), help="export cache folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [bench_model(name, args) for name in args.models.split(",")]
    print(f"{'model':14} {'timing':8} {'torch tok/s':>12} {'onnx tok/s':>12} {'ratio':>7}  rounds")
    for r in results:
        for kind in ("pass", "forward"):
            k = r[kind]
            print(f"{r['model']:14} {kind:8} {k['torch_tokens_per_s']:12.0f} {k['onnx_tokens_per_s']:12.0f} "
                  f"{k['median_ratio']:6.2f}x  {k['ratios']}")
    worst = min(r["pass"]["median_ratio"] for r in results)
    verdict = "meets" if worst >= TARGET else "MISSES"
    print(f"evaluation pass: ONNX Runtime at {worst:.2f}x torch (worst model) {verdict} the {TARGET}x target")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
