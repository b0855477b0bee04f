"""`layer_error`: relative error of each decoder layer's output against the baseline's (the layer probe)."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.layer_metrics()


GROUP = MetricGroup(
    name="layer_error",
    keys=(
        MetricKey("layer_error_max", "layer error max"), MetricKey("layer_error_mean", "layer error mean"),
        MetricKey("layer_probe_passes", "layer probe cost (passes)", format=".3f"),
    ),
    measure=measure,
    rank=30,
    description="per-layer relative output error against the baseline hidden states",
)
