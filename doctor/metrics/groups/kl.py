"""`kl`: KL divergence from the baseline's next-token distribution, and top-1 agreement (llama.cpp's statistics)."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.from_evaluation(GROUP)


GROUP = MetricGroup(
    name="kl",
    keys=(
        MetricKey("kl_mean", "KL mean", unit="nats", summary=True),
        MetricKey("kl_max", "KL max", unit="nats"),
        MetricKey("kl_p999", "KL p99.9", unit="nats"),
        MetricKey("kl_p99", "KL p99", unit="nats"),
        MetricKey("kl_p95", "KL p95", unit="nats"),
        MetricKey("kl_p90", "KL p90", unit="nats"),
        MetricKey("kl_median", "KL median", unit="nats"),
        MetricKey("top1_agreement", "top-1 agreement (same top p)", format=".4f", summary=True),
        MetricKey("delta_p_mean", "Δp mean", format=".4f"),
        MetricKey("delta_p_rms", "Δp RMS", format=".4f"),
        MetricKey("delta_p_p01", "Δp 1st percentile", format=".4f"),
        MetricKey("delta_p_p99", "Δp 99th percentile", format=".4f"),
        MetricKey("kl_coverage", "KL coverage (baseline mass)", format=".4f"),
        MetricKey("kl_coverage_min", "KL coverage, lowest token", format=".4f"),
    ),
    measure=measure,
    evaluation="kl",
    rank=20,
    description="KL(baseline || modified) per token: mean, max, p99.9, p99, p95, p90, median; top-1 agreement; "
    "delta-p; the baseline mass the KL rests on",
)
