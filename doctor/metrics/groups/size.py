"""`size`: the modified model's storage size, parameter count and ratio, effective bits and sparsity."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    from doctor.metrics.deployment import measure_size
    from doctor.patient import count_params
    from doctor.results import Measurement

    session, realized = measuring.session, measuring.result.realized
    params = count_params(session.patient.model)
    out = {
        "size_mb": measure_size(measuring.backend, session.patient, realized),
        "params": Measurement(value=float(params)),
        "params_ratio": Measurement(value=params / session.patient.facts.params),
    }
    if realized.get("effective_bits") is not None:
        out["effective_bits"] = Measurement(value=float(realized["effective_bits"]))
    if realized.get("sparsity") is not None:
        out["sparsity"] = Measurement(value=float(realized["sparsity"]))
    if realized.get("coverage") is not None:  # target weights touched over target weights (see coverage.py)
        out["coverage"] = Measurement(value=float(realized["coverage"]), n=int(realized.get("target_weights", 0)))
    return out


GROUP = MetricGroup(
    name="size",
    keys=(
        MetricKey("effective_bits", "effective bits", unit="bits/weight", format=".3f", summary=True),
        MetricKey("sparsity", "sparsity", format=".4f", summary=True),
        MetricKey("coverage", "coverage", format=".4f", summary=True),
        MetricKey("params", "params", format=",.0f"),
        MetricKey("params_ratio", "params ratio", format=".4f", summary=True),
        MetricKey("size_mb", "size (MB)", unit="MB", format=".2f", summary=True),
    ),
    measure=measure,
    rank=70,
    description="size in MB, params and their ratio, effective bits, realized sparsity, coverage of target weights",
)
