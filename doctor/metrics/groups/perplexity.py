"""`perplexity`: perplexity of the eval windows, and its paired ratio and NLL difference to the baseline."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    return measuring.from_evaluation(GROUP)


GROUP = MetricGroup(
    name="perplexity",
    keys=(
        MetricKey("ppl", "perplexity", format=".3f"),
        MetricKey("ppl_ratio", "ppl ratio", format=".4f", summary=True),
        MetricKey("nll_delta", "NLL delta", unit="nats/token", format=".4f"),
    ),
    measure=measure,
    evaluation="nll",
    rank=10,
    description="perplexity over the eval windows, ratio and NLL delta to the baseline (bootstrap intervals)",
)
