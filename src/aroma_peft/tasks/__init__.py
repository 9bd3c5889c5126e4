"""Task families as plug-ins of the training loop: a task is a file implementing ``Task``."""

from __future__ import annotations

from ..errors import UserInputError
from .base import Task
from .commonsense import CommonsenseTask

TASKS: dict[str, type[Task]] = {CommonsenseTask.name: CommonsenseTask}


def get_task(name: str, **options: object) -> Task:
    """The task registered as ``name``, built with its options (e.g. ``train_on_prompt``)."""
    if name not in TASKS:
        raise UserInputError(f"--task {name!r} is not a task family here: use one of {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Task", "get_task"]
