"""Tasks: multiple-choice, closed-ended and open-ended prompts in a small JSONL format (see `format`)."""

from __future__ import annotations

from doctor.tasks.format import Task, TaskFileError, bundled_tasks, load_task
from doctor.tasks.measure import measure_tasks
from doctor.tasks.stats import spread

__all__ = ["Task", "TaskFileError", "bundled_tasks", "load_task", "measure_tasks", "spread"]
