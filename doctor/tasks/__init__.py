"""Tasks: multiple-choice, closed-ended and open-ended prompts in a small JSONL format (see `format`).

Measuring needs torch; reading and validating task files does not, so `measure_tasks` and `spread` load on
first use and `doctor checkups validate` stays quick.
"""

from __future__ import annotations

from doctor.tasks.format import Task, TaskFileError, bundled_tasks, load_task

__all__ = ["Task", "TaskFileError", "bundled_tasks", "load_task", "measure_tasks", "spread"]


def __getattr__(name: str):
    if name == "measure_tasks":
        from doctor.tasks.measure import measure_tasks

        return measure_tasks
    if name == "spread":
        from doctor.tasks.stats import spread

        return spread
    raise AttributeError(f"module 'doctor.tasks' has no attribute {name!r}")
