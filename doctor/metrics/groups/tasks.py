"""`tasks`: accuracy on multiple-choice and exact-match tasks, and the drop from the baseline's accuracy."""

from __future__ import annotations

from doctor.metrics.registry import MetricGroup


def measure(measuring) -> dict:
    from doctor.tasks import measure_tasks
    from doctor.tasks.format import DEFAULT_TASKS

    checkup, session = measuring.checkup, measuring.session
    tasks = measure_tasks(session.patient, measuring.backend, list(checkup.tasks) or list(DEFAULT_TASKS),
                          measuring.ctx.state.get("decode"))
    return {**tasks, **accuracy_drops(tasks, session.baseline_tasks)}


def accuracy_drops(tasks: dict, baseline: dict) -> dict:
    from doctor.results import Measurement

    drops = {}
    for key, m in tasks.items():
        if key.startswith("acc:") and key in baseline:
            drops["acc_drop:" + key[4:]] = Measurement(value=baseline[key].value - m.value, n=m.n)
    return drops


GROUP = MetricGroup(
    name="tasks",
    keys=(),
    key_pattern=r"(acc|acc_norm|acc_drop|exact_match):[A-Za-z0-9_.-]+",
    measure=measure,
    rank=50,
    description="per task: acc:<task>, acc_norm:<task>, exact_match:<task>, and acc_drop:<task> from the baseline",
)
