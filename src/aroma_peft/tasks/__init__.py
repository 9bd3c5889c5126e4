"""Task families as plug-ins of the training loop: a task is a file implementing ``Task``."""

from __future__ import annotations

from typing import Any

from ..errors import UserInputError
from .base import Task
from .commonsense import CommonsenseTask

TASKS: dict[str, type[Task]] = {CommonsenseTask.name: CommonsenseTask}


def get_task(name: str, **options: object) -> Task:
    """The task registered as ``name``, built with its options (e.g. ``train_on_prompt``)."""
    if name not in TASKS:
        raise UserInputError(f"--task {name!r} is not a task family here: use one of {', '.join(TASKS)}")
    return TASKS[name](**options)


def task_for(config: Any) -> Task:
    """The task a training run's ``--task`` names: a registered family, else a GLUE task by name."""
    if config.task in TASKS:
        return TASKS[config.task].from_config(config)
    from .glue import GlueTask

    return GlueTask.from_config(config)


__all__ = ["TASKS", "Task", "get_task", "task_for"]
