"""Modification specs: a Pydantic discriminated union on `kind`, generated from the modification registry.

Each kind declares its spec in its own module (`doctor.modifications.kinds.*`, or a plugin); this module gives
the union and the kind list that suites and rules validate against. The built-in specs are re-exported here.
"""

from __future__ import annotations

from doctor.modifications.kinds.compose import ComposeSpec, flatten
from doctor.modifications.kinds.decode import DecodeSpec
from doctor.modifications.kinds.expand_layers import ExpandLayersSpec
from doctor.modifications.kinds.onnx import OnnxSpec
from doctor.modifications.kinds.prune import PruneSpec
from doctor.modifications.kinds.quantize import QuantizeSpec
from doctor.modifications.kinds.remove_layers import RemoveLayersSpec
from doctor.modifications.registry import kinds, modification_union
from doctor.spec.base import CalibrationSpec, Spec, TargetSpec

Modification = modification_union()
MODIFICATION_KINDS: tuple[str, ...] = kinds()

__all__ = [
    "MODIFICATION_KINDS", "CalibrationSpec", "ComposeSpec", "DecodeSpec", "ExpandLayersSpec", "Modification",
    "OnnxSpec", "PruneSpec", "QuantizeSpec", "RemoveLayersSpec", "Spec", "TargetSpec", "flatten",
]
