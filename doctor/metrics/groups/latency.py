"""`latency`: wall time of one forward pass over one eval window on the checkup's backend; off torch, also
latency and throughput against torch on the same windows and batch."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def measure(measuring) -> dict:
    from doctor.metrics.deployment import against_torch, measure_latency

    session, backend = measuring.session, measuring.backend
    out = {"latency_ms": measure_latency(backend, session.windows[:1], repeats=5)}
    if backend.name != "torch":
        batch = session.windows[: session.eval_spec.batch_size]
        out.update(against_torch(backend, session.patient.model, batch, out["latency_ms"]))
    return out


GROUP = MetricGroup(
    name="latency",
    keys=(
        MetricKey("latency_ms", "latency (ms)", unit="ms", format=".2f", summary=True),
        MetricKey("latency_torch_ms", "torch latency (ms)", unit="ms", format=".2f"),
        MetricKey("latency_ratio", "latency / torch", format=".3f"),
        MetricKey("throughput_tok_s", "throughput (tokens/s)", format=".1f"),
        MetricKey("throughput_torch_tok_s", "torch throughput (tokens/s)", format=".1f"),
        MetricKey("throughput_ratio", "throughput / torch", format=".3f"),
    ),
    measure=measure,
    rank=80,
    description="median forward latency of one eval window (5 repeats); off torch, ratios to torch",
)
