"""`attention`: how much the attention entropy per layer moved from the baseline's (the layer probe).

Opt-in and priced: attention probabilities come only from the eager attention path, so the baseline and each
checkup that asks for this group take a pass of their own over the probed windows (`attention_probe_passes`).
"""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.layer_metrics()


GROUP = MetricGroup(
    name="attention",
    keys=(
        MetricKey("attention_entropy_shift", format=".4f"),
        MetricKey("attention_probe_passes", "attention entropy cost (passes)", format=".3f"),
    ),
    measure=measure,
    rank=40,
    description="shift of the per-layer attention entropy from the baseline",
)
