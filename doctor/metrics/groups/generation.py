"""`generation`: open-ended generation quality: repetition, distinct n-grams, length, and the base model's
perplexity of the generated text (scored after the weights are restored)."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup, MetricKey


def sample(measuring) -> dict:
    from doctor.metrics.generation import generate_samples

    measuring.memo["generation"] = generate_samples(
        measuring.session.patient, measuring.ctx.state.get("decode"), list(measuring.checkup.tasks)
    )
    return {}


def score(measuring) -> dict:
    from doctor.metrics.generation import generation_metrics

    return generation_metrics(measuring.memo["generation"], measuring.session.patient)


GROUP = MetricGroup(
    name="generation",
    keys=(
        MetricKey("repetition_rate", format=".4f"),
        MetricKey("distinct_1", format=".4f"),
        MetricKey("distinct_2", format=".4f"),
        MetricKey("mean_length", unit="tokens", format=".1f"),
        MetricKey("generated_ppl", format=".3f"),
    ),
    measure=sample,
    after_restore=score,
    rank=60,
    description="samples from the modified model, scored for repetition, diversity and base-model perplexity",
)
