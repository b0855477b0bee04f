"""`routing`: how a modification moved a mixture-of-experts model's routing, against the unmodified model's.

On a few eval windows: the fraction of tokens whose chosen experts change, the mean KL divergence of the
router's distribution, and the mean total-variation distance of the experts' load. Dense models have no
routing and report nothing.
"""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey

WINDOWS = 4  # routing is per token: a few windows give thousands of decisions per layer


def record(measuring) -> dict:
    from doctor.architectures.routing import capture_routing

    windows = measuring.session.windows[:WINDOWS]
    measuring.memo["routing"] = capture_routing(measuring.session.patient.model, windows)
    return {}


def compare(measuring) -> dict:
    from doctor.architectures.routing import capture_routing, routing_shift
    from doctor.results import Measurement

    current = measuring.memo.get("routing")
    if not current:
        return {}
    windows = measuring.session.windows[:WINDOWS]
    base = capture_routing(measuring.session.patient.model, windows)  # restored: the unmodified routing
    tokens = base[0].chosen.shape[0]
    return {key: Measurement(value=value, n=tokens) for key, value in routing_shift(base, current).items()}


GROUP = MetricGroup(
    name="routing",
    keys=(
        MetricKey("routing_changed", "tokens changing experts", format=".4f"),
        MetricKey("router_kl", "router KL", format=".5f"),
        MetricKey("expert_load_shift", "expert load shift", format=".4f"),
    ),
    measure=record,
    after_restore=compare,
    rank=45,
    description="mixture-of-experts routing shift: tokens changing experts, router KL, expert load shift",
)
