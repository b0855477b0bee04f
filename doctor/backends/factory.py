"""Backends by name, for the runner's `--backend`: 'torch' wraps the model, 'onnx' exports it as it is now.

The runner asks for a fresh backend after each modification, so under 'onnx' every checkup's modified weights
are re-exported (an unchanged model hits the export cache).
"""

from __future__ import annotations

import torch

from doctor.backends.base import Backend
from doctor.errors import ConfigError

BACKENDS = ("torch", "onnx")


def resolve_device(device: str | torch.device | None, patient) -> str:
    """'auto' or None follows the model's device; otherwise the device type asked for."""
    if device is None or str(device) == "auto":
        return patient.device.type
    return torch.device(device).type


def make_backend(name: str, patient, out_dir, device: str | torch.device | None = "auto") -> Backend:
    """A backend over the patient's current weights; raises ConfigError for an unknown name."""
    if name == "torch":
        from doctor.backends.torch_backend import TorchBackend

        return TorchBackend(patient.model)
    if name == "onnx":
        from doctor.onnx.backend import OrtBackend, require_onnxruntime
        from doctor.onnx.export import export_model

        require_onnxruntime()
        exported = export_model(patient.model, out_dir)
        return OrtBackend(exported.path, device=resolve_device(device, patient))
    raise ConfigError(f"--backend: unknown backend '{name}'; known: {', '.join(BACKENDS)}")
