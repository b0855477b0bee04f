"""`kind: decode`: choose the decoding strategy for a checkup's generation metrics. Touches no weights.

The strategy is put in `ctx.state["decode"]`, where `doctor.tasks.measure_tasks` (closed-ended exact match)
and `doctor.metrics.generation.generate_samples` (open-ended quality) read it. Composed after a compression
step (`kind: compose`), it makes "4-bit plus sampling" one checkup.
"""

from __future__ import annotations

from doctor.errors import ModificationError
from doctor.modifications.base import Applied, ApplyContext
from doctor.spec.modification import DecodeSpec
from doctor.tasks.generation import describe


def apply(spec: DecodeSpec, ctx: ApplyContext) -> Applied:
    previous = ctx.state.get("decode")
    if previous is not None and previous != spec:
        raise ModificationError(f"two decoding strategies in one checkup ({previous.strategy}, {spec.strategy})")
    ctx.state["decode"] = spec
    return Applied(realized={"decode": describe(spec)})
