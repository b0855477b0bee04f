"""Export a loaded (possibly modified) Hugging Face causal LM to ONNX, cached by a hash of its weights.

The graph takes `input_ids` (batch, seq) and returns `logits` (batch, seq, vocab): no attention mask (evaluation
windows are full), no KV cache. With transformers 5 the TorchScript exporter fails on these models, so this uses
the dynamo exporter (`torch.export` + onnxscript) at opset 18, whose fp32 logits match PyTorch to ~1e-5.

Exports are slow (seconds to minutes), so each lands in `<out_dir>/onnx-cache/<key>/` where the key hashes the
weight bytes, the config, the export settings and the exporter versions: an unmodified model, or a checkup that
leaves the weights alone, reuses the export. A cache entry is written to a temporary folder and renamed into
place, so an interrupted export never leaves a half-written entry behind. What the exporter cannot express
(a Mamba scan, a failed conversion) is "unsupported: reason" (see `doctor.onnx.support`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from doctor.architectures import Unsupported
from doctor.errors import ModificationError
from doctor.onnx.support import (
    exportable_experts,
    is_exporter_limit,
    require_dynamic_sequence,
    require_exportable,
)

log = logging.getLogger(__name__)

EXPORT_RECIPE = 2  # bump when the export recipe changes; old cache entries are then ignored
MODEL_FILE = "model.onnx"
KEEP_EXPORTS = 3  # cache entries kept: the unmodified model and the latest modified ones
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
INFO_FILE = "export.json"  # written last: its presence marks a complete entry
_EXAMPLE_SHAPE = (2, 16)  # tracing input; batch and sequence stay symbolic
# per-pass INFO chatter from the exporter and optimizer, and torchvision-missing warnings
_EXPORT_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")


@dataclass(frozen=True)
class ExportSettings:
    opset: int = 18
    dtype: str = "float32"


@dataclass(frozen=True)
class Exported:
    """An ONNX export on disk: `path` is the .onnx file (weights in external data beside it)."""

    path: Path
    key: str
    seconds: float  # time the export took when it was made
    cached: bool  # True when this call found it in the cache


class LogitsOnly(torch.nn.Module):
    """input_ids (batch, seq) -> logits (batch, seq, vocab), without cache or extra outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def require_onnx() -> None:
    """Fail with a one-line message when the export toolchain is missing."""
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise ModificationError(f"ONNX export needs the '{name}' package: pip install {name}") from None


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every state-dict entry: name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_key(model: torch.nn.Module, settings: ExportSettings) -> str:
    """Weights, config, settings and exporter versions; any change means a new export."""
    import onnxscript

    config = getattr(model, "config", None)
    parts = {
        "recipe": EXPORT_RECIPE,
        "class": type(model).__name__,
        "config": config.to_json_string(use_diff=False) if config is not None else "",
        "settings": asdict(settings),
        "torch": torch.__version__,
        "onnxscript": onnxscript.__version__,
        "weights": weights_fingerprint(model),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def export_model(
    model: torch.nn.Module, out_dir: Path, settings: ExportSettings | None = None, keep: int = KEEP_EXPORTS
) -> Exported:
    """Export `model` as it is now, cached in `<out_dir>/onnx-cache/` (the `keep` most recent entries stay);
    raises ModificationError when the export fails."""
    settings = settings or ExportSettings()
    require_onnx()
    require_exportable(model)
    key = cache_key(model, settings)
    entry = Path(out_dir) / "onnx-cache" / key
    if (entry / INFO_FILE).is_file():
        info = json.loads((entry / INFO_FILE).read_text())
        (entry / INFO_FILE).touch()  # last use, for pruning
        log.info("ONNX export cache hit %s", entry)
        return Exported(path=entry / MODEL_FILE, key=key, seconds=float(info["seconds"]), cached=True)
    shutil.rmtree(entry, ignore_errors=True)  # an incomplete entry (no info file) is never reused
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        start = time.perf_counter()
        _export_to(model, tmp / MODEL_FILE, settings)
        seconds = time.perf_counter() - start
        require_dynamic_sequence(tmp / MODEL_FILE, model)
        info = {"key": key, "seconds": round(seconds, 3), "settings": asdict(settings), "torch": torch.__version__}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        _publish(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to ONNX in %.1f s", type(model).__name__, seconds)
    prune_cache(entry.parent, keep)
    return Exported(path=entry / MODEL_FILE, key=key, seconds=seconds, cached=False)


def prune_cache(cache: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` most recently used entries (each checkup under `--backend onnx` exports a
    modified model of full size; only the unmodified model is likely to be used again)."""
    entries = sorted(
        (p for p in cache.iterdir() if not p.name.startswith(".") and (p / INFO_FILE).is_file()),  # .tmp: in flight
        key=lambda p: (p / INFO_FILE).stat().st_mtime,
        reverse=True,
    )
    removed = entries[max(keep, 1) :]
    for entry in removed:
        shutil.rmtree(entry, ignore_errors=True)
    return removed


def _publish(tmp: Path, entry: Path) -> None:
    """Rename the finished folder into place; a concurrent identical export may have won the race."""
    try:
        os.replace(tmp, entry)
    except OSError:
        if not (entry / INFO_FILE).is_file():
            raise


def _export_to(model: torch.nn.Module, target: Path, settings: ExportSettings) -> None:
    """Trace with symbolic batch and sequence, convert, drop per-node debug metadata, save."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    seq = torch.export.Dim("seq", min=2, max=context) if context else torch.export.Dim("seq", min=2)
    device = next(model.parameters()).device
    example = torch.zeros(_EXAMPLE_SHAPE[0], min(_EXAMPLE_SHAPE[1], context or _EXAMPLE_SHAPE[1]), dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with (_as_dtype(model, getattr(torch, settings.dtype)), torch.no_grad(), quiet_logs(*_EXPORT_LOGGERS),
              exportable_experts(model)):
            program = torch.onnx.export(
                LogitsOnly(model).eval(),
                (example.to(device),),
                dynamo=True,
                opset_version=settings.opset,
                input_names=["input_ids"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": {0: torch.export.Dim("batch", min=1), 1: seq}},
                optimize=True,
                verbose=False,
            )
            _strip_debug_metadata(program.model)
            program.save(str(target), external_data=True)
    except ModificationError:
        raise
    except Exception as exc:  # the exporter raises many types; each is a failed checkup, not a crash
        if is_exporter_limit(exc):
            raise Unsupported(f"ONNX export of {type(model).__name__}: {_describe(exc)}") from exc
        raise ModificationError(f"ONNX export of {type(model).__name__} failed: {_describe(exc)}") from exc
    finally:
        model.train(was_training)


def _strip_debug_metadata(ir_model) -> None:
    """The exporter stores stack traces per node; they are most of a small model's file and not deployed."""
    for node in ir_model.graph.all_nodes():
        node.metadata_props.clear()


@contextlib.contextmanager
def quiet_logs(*names: str, level: int = logging.CRITICAL) -> Iterator[None]:
    """Raise the level of third-party loggers for a noisy call (its failures surface as exceptions)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export's pytree code
            yield
    finally:
        for logger, old in zip(loggers, levels, strict=True):
            logger.setLevel(old)


@contextlib.contextmanager
def _as_dtype(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Temporarily cast floating parameters and buffers; half/bfloat16 -> float32 -> back is exact."""
    changed = []
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.dtype != dtype:
            changed.append((tensor, tensor.dtype))
            tensor.data = tensor.data.to(dtype)
    try:
        yield
    finally:
        for tensor, original in changed:
            tensor.data = tensor.data.to(original)


def onnx_files(path: Path) -> list[Path]:
    """The .onnx file and every external-data file its initializers point to."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    locations = set()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in init.external_data if e.key == "location")
    return [path, *(path.parent / loc for loc in sorted(locations))]


def files_size_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in onnx_files(path))


def _describe(exc: BaseException) -> str:
    """One line: the exporter's headline and, when there is one, the root cause it wraps."""
    messages = []
    while exc is not None and len(messages) < 10:
        text = _ANSI.sub("", str(exc)).strip()
        messages.append(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip())
        exc = exc.__cause__
    line = messages[0] if len(messages) == 1 else f"{messages[0]} (cause: {messages[-1]})"
    return line[:400]
