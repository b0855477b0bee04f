"""Deployment facts per checkup: median latency of one forward window, and model size on disk.

Latency is wall time for the full logits of one window, after warm-up runs (first calls allocate memory and,
under ONNX Runtime, finish graph optimisation); the median resists scheduler noise on shared machines.
"""

from __future__ import annotations

import statistics
import time

import torch

from doctor.results import Measurement

MB = 1e6


def measure_latency(backend, window_ids: torch.Tensor, repeats: int = 5, warmup: int = 2) -> Measurement:
    """Median milliseconds for one window (1, seq_len) through `backend`; lower/upper are the quartiles."""
    if window_ids.dim() == 1:
        window_ids = window_ids[None]
    window_ids = window_ids[:1]
    seq_len = window_ids.shape[1]
    times = []
    for i in range(warmup + max(repeats, 1)):
        start = time.perf_counter()
        last = None
        for _, logits in backend.logits_chunks(window_ids, seq_len):
            last = logits
        if last is not None and last.is_cuda:
            torch.cuda.synchronize(last.device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0], None, times[0])
    return Measurement(
        value=statistics.median(times),
        lower=q1,
        upper=q3,
        n=len(times),
        note=f"median of {len(times)} forward passes of 1x{seq_len} tokens after {warmup} warm-up; "
        f"interval: quartiles; backend {backend.name}/{backend.provider}",
    )


def measure_throughput(backend, windows: torch.Tensor, repeats: int = 3, warmup: int = 1) -> Measurement:
    """Median tokens per second of full logits for the batch `windows` (B, seq_len) through `backend`."""
    times = []
    for i in range(warmup + max(repeats, 1)):
        start = time.perf_counter()
        for _, logits in backend.logits_chunks(windows, windows.shape[1]):
            if logits.is_cuda:
                torch.cuda.synchronize(logits.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return Measurement(value=windows.numel() / statistics.median(times), n=len(times),
                       note=f"tokens/s, median of {len(times)} passes over {windows.shape[0]}x{windows.shape[1]} "
                       f"tokens; backend {backend.name}/{backend.provider}")


def against_torch(backend, model: torch.nn.Module, windows: torch.Tensor, latency: Measurement) -> dict:
    """Latency and throughput of `backend` next to the reference framework's on the same windows and batch.

    The torch model holds the same weights as the backend's export, so the ratios price the runtime alone.
    """
    from doctor.backends.torch_backend import TorchBackend

    reference = TorchBackend(model)
    torch_latency = measure_latency(reference, windows[:1], repeats=latency.n or 5)
    throughput = measure_throughput(backend, windows)
    torch_throughput = measure_throughput(reference, windows)
    return {
        "latency_torch_ms": torch_latency,
        "latency_ratio": Measurement(value=latency.value / torch_latency.value, n=latency.n,
                                     note=f"{backend.name} over torch, median latency of one window"),
        "throughput_tok_s": throughput,
        "throughput_torch_tok_s": torch_throughput,
        "throughput_ratio": Measurement(value=throughput.value / torch_throughput.value, n=throughput.n,
                                        note=f"{backend.name} over torch, tokens/s on the evaluation batch"),
    }


def measure_size(backend=None, patient=None, realized: dict | None = None) -> Measurement:
    """Size in MB: the ONNX files on disk for an ONNX backend, else the parameters at their storage bits.

    For PyTorch the weights stay in their dtype after fake quantization, so `realized['effective_bits']` over
    `realized['quantized_weights']` (from a quantize modification) gives the deployable size.
    """
    size_bytes = getattr(backend, "file_size_bytes", None)
    if size_bytes is not None:
        return Measurement(value=size_bytes / MB, note=f"ONNX model files on disk ({backend.path.name} + data)")
    model = getattr(patient, "model", None) or getattr(backend, "model", None)
    if model is None:
        raise ValueError("measure_size needs an ONNX backend, a patient or a torch backend")
    return Measurement(value=parameter_bytes(model, realized or {}) / MB, note=_size_note(realized or {}))


def parameter_bytes(model: torch.nn.Module, realized: dict) -> float:
    """Unique parameter bytes (tied weights once), quantized weights at their effective bits."""
    seen: set[int] = set()
    total = 0.0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    bits, count = realized.get("effective_bits"), realized.get("quantized_weights")
    if bits and count:
        dense_bytes = next(model.parameters()).element_size()
        total -= count * (dense_bytes - bits / 8)
    return total


def _size_note(realized: dict) -> str:
    if realized.get("effective_bits") and realized.get("quantized_weights"):
        return f"parameters; {realized['quantized_weights']} quantized weights at {realized['effective_bits']:.3g} bits"
    return "parameters at their stored dtype"
