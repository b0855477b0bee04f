"""What a GGUF file says about itself: name, architecture, the quantization type of its tensors, size, hash.

Read with the `gguf` package's reader (memory-mapped: the tensors are not dequantized here), so the facts are
cheap enough to compute before deciding whether a cached conversion exists.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from doctor.errors import ModelLoadError

_NAME_FIELDS = ("general.name", "general.basename", "general.size_label", "general.finetune",
                "general.organization", "general.base_model.0.repo_url", "tokenizer.ggml.pre")


@dataclass(frozen=True)
class GGUFFacts:
    """The file's own account of the model (everything JSON-serializable, for the report)."""

    path: str
    file_size: int
    sha256: str
    architecture: str
    name: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # naming fields present (general.*, tokenizer.ggml.pre)
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGML type -> number of tensors
    type_share: dict[str, float] = field(default_factory=dict)  # GGML type -> share of all weight elements
    linear_types: dict[str, str] = field(default_factory=dict)  # 2-D tensor name -> GGML type
    context_length: int | None = None

    @property
    def main_type(self) -> str:
        """The type holding most weight elements (what llama.cpp names the file by, e.g. Q4_1)."""
        return max(self.type_share, key=self.type_share.get) if self.type_share else "unknown"

    def to_record(self) -> dict:
        """The report's view: the per-tensor table is summarized, not repeated."""
        out = asdict(self)
        out.pop("linear_types")
        out["main_type"] = self.main_type
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gguf_reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError(f'{path}: reading GGUF needs the gguf extra: pip install "model-doctor[gguf]"') from None
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable GGUF file: {first}") from None


def _field(reader, key: str):
    item = reader.fields.get(key)
    if item is None:
        return None
    try:
        return item.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def read_facts(path: Path, sha256: str | None = None) -> GGUFFacts:
    """Facts of one .gguf file; `sha256` skips re-hashing when the caller has it."""
    reader = _gguf_reader(path)
    architecture = _field(reader, "general.architecture")
    if not isinstance(architecture, str):
        raise ModelLoadError(f"{path}: GGUF metadata has no general.architecture")
    counts: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    linear_types = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        counts[kind] += 1
        elements[kind] += int(tensor.n_elements)
        if len(tensor.shape) == 2:
            linear_types[tensor.name] = kind
    total = sum(elements.values()) or 1
    metadata = {k.removeprefix("general."): str(v) for k in _NAME_FIELDS if (v := _field(reader, k)) is not None}
    context = _field(reader, f"{architecture}.context_length")
    name = _field(reader, "general.name")
    return GGUFFacts(
        path=str(path), file_size=path.stat().st_size, sha256=sha256 or file_sha256(path), architecture=architecture,
        name=name if isinstance(name, str) else None, metadata=metadata, tensor_types=dict(counts),
        type_share={k: round(v / total, 6) for k, v in elements.most_common()}, linear_types=linear_types,
        context_length=int(context) if isinstance(context, int) else None,
    )
