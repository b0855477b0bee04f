"""Writes the bundled demo candidate: stories260k after the doctor's GPTQ (4-bit, groups of 32, static groups,
32 TinyStories calibration windows of 512 tokens, seed 0), packed as a GPTQ (v1) checkpoint.

    python -m tests.artifacts.make_demo_candidate [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from doctor.data.calibration import CalibrationProvider
from doctor.modifications import apply_modification
from doctor.modifications.base import ApplyContext, UndoLog
from doctor.modifications.kinds.quantize import QuantizeSpec
from doctor.patient import load_patient
from doctor.resources import DEMO_CANDIDATE
from doctor.spec.base import CalibrationSpec
from tests.artifacts.checkpoint_writers import write_packed

SPEC = QuantizeSpec(method="gptq", bits=4, group_size=32, static_groups=True)
CALIBRATION = CalibrationSpec(corpus="tinystories-calib", samples=32, seq_len=512, seed=0)


def quantize_demo(patient, spec: QuantizeSpec = SPEC, calibration: CalibrationSpec = CALIBRATION) -> UndoLog:
    """GPTQ the demo model in place; the returned undo log restores it."""
    provider = CalibrationProvider(patient, calibration, default_seq_len=calibration.seq_len)
    ctx = ApplyContext(patient=patient, undo=UndoLog(), calibration=provider, out_dir=Path("."))
    apply_modification(spec, ctx)
    return ctx.undo


def main(out: Path) -> None:
    patient = load_patient(None)
    original = {k: v.clone() for k, v in patient.model.state_dict().items()}
    quantize_demo(patient)
    write_packed(patient, original, out, "gptq", SPEC.bits, SPEC.group_size)
    sys.stdout.write(f"wrote {out}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEMO_CANDIDATE)
