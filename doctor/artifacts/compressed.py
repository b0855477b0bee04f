"""compressed-tensors (llm-compressor) checkpoints, decompressed by their own library through transformers."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from doctor.errors import ModelLoadError


def read_compressed(folder: Path) -> dict[str, torch.Tensor]:
    """Dense float32 weights by parameter name."""
    try:
        import compressed_tensors  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f'{folder}: compressed-tensors checkpoints need the compressed-tensors package: '
            'pip install "model-doctor[artifacts]"'
        ) from None
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    try:
        with warnings.catch_warnings():  # "the folder's own quantization_config is used": that is the intent
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(
                str(folder), dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True),
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{folder}: cannot decompress compressed-tensors checkpoint: {first}") from None
    return {name: p.detach().float() for name, p in model.named_parameters()}
