"""Examination speed on a GPU: a randomly initialised model with Llama-3-8B's shapes (weights don't change speed).

    python -m benchmarks.gpu                      # CUDA: 32 layers, 128K vocabulary, bfloat16, the standard suite
    python -m benchmarks.gpu --device cpu --layers 1 --vocab 32000 --windows 2 --seq-len 256 \\
        --samples 2 --checkups rtn-w4-g32,magnitude-30,wanda-50       # the same code, scaled to a CPU

Printed, for the evaluation windows of the suite (48 windows of 2048 tokens, batch 4 unless overridden):
- tokens/s of a plain forward (`model(input_ids).logits`, the device synchronised) and of the evaluation pass
  (perplexity only; with KL against the baseline store, which is what a checkup runs; the baseline pass that
  fills the store), timed alternately over `--rounds` rounds; the ratio is plain tokens/s over pass tokens/s
  (the pass's time over the plain forward's), median over rounds; goal for the checkup's pass: <= 1.1;
- the whole suite's wall time (goal on one H200: under 15 minutes) with the baseline's share, and each
  checkup's wall time (apply, measure, restore) in evaluation passes (the baseline pass with the KL store, as
  the examination prices its extra passes).
Nothing is downloaded: the tokenizer maps bytes of the bundled WikiText-2 text onto the vocabulary.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.models import ByteTokenizer
from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.examination.runner import Options, examine
from doctor.metrics.evaluation import baseline_pass, compare_pass, kl_plan
from doctor.patient import Patient, extract_facts
from doctor.spec.checkup import Suite
from doctor.spec.suites import load_suite

# meta-llama/Meta-Llama-3-8B config.json
LLAMA3_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
             "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
PASS_GOAL = 1.1
SUITE_GOAL_S = 15 * 60


def random_model(shapes: dict, device: str, dtype: torch.dtype, name: str) -> Patient:
    """A Llama with `shapes`, initialised directly on `device` in `dtype` (no float32 copy of 8B weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shapes)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return Patient(model=model, tokenizer=ByteTokenizer(shapes["vocab_size"]), facts=extract_facts(model, name),
                   source="random")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def plain_forward(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> None:
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch):
            model(input_ids=windows[i : i + batch].to(device), use_cache=False).logits  # noqa: B018


@dataclass
class PassSpeed:
    name: str
    tokens_s: float
    ratio: float  # the pass's time over the plain forward's (median over rounds)


def pass_speeds(patient: Patient, windows: torch.Tensor, batch: int, rounds: int) -> tuple[float, list[PassSpeed]]:
    """Plain-forward tokens/s and, per evaluation pass, tokens/s and its time over the plain forward's."""
    model, vocab = patient.model, patient.facts.vocab
    device = next(model.parameters()).device
    backend = TorchBackend(model)
    plan = kl_plan(vocab)
    plain_forward(model, windows[:batch], batch)  # warm-up: allocator, kernels
    _, cache = baseline_pass(backend, windows, vocab, batch_size=batch, plan=plan)
    passes = {
        "perplexity pass": lambda: compare_pass(backend, windows, cache, vocab, batch_size=batch, with_kl=False),
        f"checkup pass (ppl + KL, {cache.mode})": lambda: compare_pass(backend, windows, cache, vocab,
                                                                        batch_size=batch),
        f"baseline pass (fills the {cache.mode} store)": lambda: baseline_pass(backend, windows, vocab,
                                                                              batch_size=batch, plan=plan),
    }
    plain_s: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in passes}
    ratios: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, run in passes.items():
            plain = timed(lambda: plain_forward(model, windows, batch), device)
            seconds = timed(run, device)
            plain_s.append(plain)
            times[name].append(seconds)
            ratios[name].append(seconds / plain)
    tokens = windows.numel()
    return tokens / statistics.median(plain_s), [
        PassSpeed(name, tokens / statistics.median(times[name]), statistics.median(ratios[name])) for name in passes
    ]


def bench_suite(suite: Suite, windows: int | None, seq_len: int | None, batch: int | None, samples: int | None,
                keep: list[str] | None) -> Suite:
    """The suite with the evaluation and calibration overrides and only the checkups in `keep` (all if None)."""
    evaluation = {k: v for k, v in {"max_windows": windows, "seq_len": seq_len, "batch_size": batch}.items() if v}
    calibration = {"samples": samples} if samples else {}
    checkups = suite.checkups if keep is None else [c for c in suite.checkups if c.id in keep]
    missing = set(keep or []) - {c.id for c in checkups}
    if missing:
        raise SystemExit(f"--checkups: not in suite {suite.name}: {', '.join(sorted(missing))}")
    return suite.model_copy(update={"eval": suite.eval.model_copy(update=evaluation),
                                    "calibration": suite.calibration.model_copy(update=calibration),
                                    "checkups": checkups})


def measure(shapes: dict, suite: Suite, *, device: str, dtype: torch.dtype, rounds: int, name: str,
            examine_suite: bool = True, out=None) -> dict:
    """Build the model, measure the passes and (optionally) examine it with `suite`; print and return the rows."""
    out = out or functools.partial(print, flush=True)  # progress shows as it comes, even into a file
    device_t = torch.device(device)
    patient = random_model(shapes, device, dtype, name)
    seq_len = min(suite.eval.seq_len or 2048, shapes["max_position_embeddings"])
    text = resolve_corpus(suite.eval.corpus, demo=False, purpose="eval")  # as the examination will
    count = suite.eval.max_windows or 8
    windows = eval_windows(tokenize(text, patient.tokenizer, seq_len * count), seq_len, count)
    batch = suite.eval.batch_size
    out(f"model: {name}, {patient.facts.params / 1e9:.2f}B parameters, {dtype}, {_device_name(device_t)}")
    out(f"windows: {windows.shape[0]} x {seq_len} tokens, batch {batch}")
    plain, speeds = pass_speeds(patient, windows, batch, rounds)
    out(f"{'pass':44} {'tokens/s':>12} {'/ plain':>8}")
    out(f"{'plain forward (model(input_ids).logits)':44} {plain:12.0f} {1.0:8.3f}")
    for s in speeds:
        goal = f"  goal <= {PASS_GOAL} {'met' if s.ratio <= PASS_GOAL else 'MISSED'}" if "checkup" in s.name else ""
        out(f"{s.name:44} {s.tokens_s:12.0f} {s.ratio:8.3f}{goal}")
    result = {"plain_tokens_s": plain, "passes": {s.name: (s.tokens_s, s.ratio) for s in speeds}}
    if not examine_suite:
        return result
    unit = windows.numel() / next(s.tokens_s for s in speeds if s.name.startswith("baseline"))  # seconds
    with tempfile.TemporaryDirectory() as folder:
        options = Options(out_dir=Path(folder), device=device, use_predictor=False)
        wall = timed(lambda: result.update(exam=examine(patient, suite, options)), device_t)
    exam = result.pop("exam")
    verdict = "met" if wall <= SUITE_GOAL_S else "MISSED"
    out(f"suite {suite.name}: {len(exam.checkups)} checkups in {wall:.1f} s (goal on one H200 < {SUITE_GOAL_S} s: "
        f"{verdict}); baseline {exam.baseline.duration_s:.1f} s; one evaluation pass = {unit:.2f} s")
    out(f"{'checkup':28} {'status':7} {'seconds':>9} {'passes':>8}")
    rows = []
    for c in exam.checkups:
        rows.append((c.id, c.status, c.duration_s, c.duration_s / unit))
        out(f"{c.id:28} {c.status:7} {c.duration_s:9.1f} {c.duration_s / unit:8.2f}" + (f"  {c.error}" if c.error else ""))
    result.update(suite_s=wall, baseline_s=exam.baseline.duration_s, pass_s=unit, checkups=rows)
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA")
    parser.add_argument("--layers", type=int, help="decoder layers (default: all 32 on CUDA, 1 on CPU)")
    parser.add_argument("--vocab", type=int, help="vocabulary (default: Llama-3's 128256; 32000 keeps a CPU run small)")
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--checkups", help="comma-separated checkup ids of the suite (default: all)")
    parser.add_argument("--windows", type=int, help="evaluation windows (default: the suite's)")
    parser.add_argument("--seq-len", type=int, help="tokens per window (default: the suite's, 2048)")
    parser.add_argument("--batch", type=int, help="windows per forward (default: the suite's)")
    parser.add_argument("--samples", type=int, help="calibration windows (default: the suite's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes-only", action="store_true", help="skip the suite; pass speeds only")
    args = parser.parse_args()
    on_cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_cuda else "float32"))
    shapes = dict(LLAMA3_8B)
    shapes["num_hidden_layers"] = args.layers or (LLAMA3_8B["num_hidden_layers"] if on_cuda else 1)
    shapes["vocab_size"] = args.vocab or LLAMA3_8B["vocab_size"]
    name = f"llama-3-8b shapes x{shapes['num_hidden_layers']}, vocab {shapes['vocab_size']} (random)"
    suite, _, _ = load_suite(args.suite)
    keep = args.checkups.split(",") if args.checkups else None
    suite = bench_suite(suite, args.windows, args.seq_len, args.batch, args.samples, keep)
    measure(shapes, suite, device=args.device, dtype=dtype, rounds=args.rounds, name=name,
            examine_suite=not args.passes_only)


if __name__ == "__main__":
    main()
