"""Datasets the command line trains on."""

from .glue import TASKS, DataFileError, Example, TaskSpec, get_task, load_task

__all__ = ["TASKS", "DataFileError", "Example", "TaskSpec", "get_task", "load_task"]
