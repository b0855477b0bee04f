"""`kl`: KL divergence from the baseline's next-token distribution, and top-1 agreement (llama.cpp's statistics)."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.from_evaluation(GROUP)


GROUP = MetricGroup(
    name="kl",
    keys=(
        MetricKey("kl_mean", "KL mean", unit="nats", summary=True),
        MetricKey("kl_median", "KL median", unit="nats"),
        MetricKey("kl_p99", "KL p99", unit="nats"),
        MetricKey("top1_agreement", "top-1 agreement", format=".4f", summary=True),
        MetricKey("topk_coverage", "top-k coverage", format=".4f"),
    ),
    measure=measure,
    evaluation="kl",
    rank=20,
    description="KL(baseline || modified) per token: mean, median, p99; top-1 agreement; baseline mass kept",
)
