"""ONNX Runtime backend: logits for token windows from an exported graph, on the CUDA or CPU execution provider.

The provider recorded is the one the session actually uses: ORT falls back to CPU silently when the CUDA provider
cannot start (no device, missing libraries), and the report must say where the numbers came from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from doctor.errors import ModificationError
from doctor.onnx.export import files_size_bytes

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def require_onnxruntime():
    """The onnxruntime module, or a one-line ModificationError saying how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModificationError(
            "the onnx backend needs ONNX Runtime: pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)"
        ) from None
    return onnxruntime


def wanted_providers(available: list[str], device: str | torch.device) -> list[str]:
    """CUDA first when the device is CUDA and ORT has the provider, always CPU as the fallback."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if CUDA in available:
            return [CUDA, CPU]
        log.warning("CUDA asked but this ONNX Runtime has no CUDAExecutionProvider; using the CPU")
    return [CPU]


class OrtBackend:
    """The Backend protocol over an `onnxruntime.InferenceSession` built from an .onnx file."""

    name = "onnx"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        ort = require_onnxruntime()
        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the same thread count as torch, so throughput comparisons are fair
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = wanted_providers(ort.get_available_providers(), device)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModificationError(f"ONNX Runtime cannot load {self.path.name}: {_first_line(exc)}") from exc
        self.provider = self.session.get_providers()[0]
        if providers[0] != self.provider:
            log.warning("ONNX Runtime fell back from %s to %s", providers[0], self.provider)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    @property
    def file_size_bytes(self) -> int:
        """The .onnx file plus its external weight data, as deployed."""
        return files_size_bytes(self.path)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Full logits (batch, seq, vocab), float32 on CPU."""
        feed = {self._input: ids.detach().to("cpu", torch.int64).contiguous().numpy()}
        try:
            (out,) = self.session.run([self._output], feed)
        except Exception as exc:
            raise ModificationError(f"ONNX Runtime failed on a {tuple(ids.shape)} batch: {_first_line(exc)}") from exc
        return torch.from_numpy(out).float()

    def logits_chunks(self, ids: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        # the graph returns all positions at once; chunks are views into that one output
        logits = self.logits(ids)  # (B, T, V)
        for start in range(0, ids.shape[1], chunk):
            yield start, logits[:, start : start + chunk]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
