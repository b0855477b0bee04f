"""`latency`: wall time of one forward pass over one eval window on the checkup's backend."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    from doctor.metrics.deployment import measure_latency

    return {"latency_ms": measure_latency(measuring.backend, measuring.session.windows[:1], repeats=5)}


GROUP = MetricGroup(
    name="latency",
    keys=(MetricKey("latency_ms", "latency (ms)", unit="ms", format=".2f", summary=True),),
    measure=measure,
    rank=80,
    description="median forward latency of one eval window (5 repeats)",
)
