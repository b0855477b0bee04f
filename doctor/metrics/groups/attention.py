"""`attention`: how much the attention entropy per layer moved from the baseline's (the layer probe)."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.layer_metrics()


GROUP = MetricGroup(
    name="attention",
    keys=(MetricKey("attention_entropy_shift", format=".4f"),),
    measure=measure,
    rank=40,
    description="shift of the per-layer attention entropy from the baseline",
)
