"""The task interface: what a generic training loop needs from a task family, and nothing about methods.

A task owns its data (files or hub), the model head it needs, how examples become batches and which
positions carry loss, and its evaluation and metrics. Methods (AROMA, LoRA, ...) wrap whatever model the
task loads and never look at the task; a new task family is a new file implementing this class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Task(ABC):
    name: str  # the value of ``--task``

    @abstractmethod
    def load_split(
        self, data_dir: str | Path, split: str, sets: Sequence[str] | None = None, limit: int | None = None
    ) -> dict[str, list[Any]]:
        """Examples of ``split`` per evaluation set (keyed by the name metrics are reported under)."""

    @abstractmethod
    def load_model(self, name_or_path: str | None) -> tuple[nn.Module, Any]:
        """The pretrained model with this task's head, and its tokenizer (``None``: the task's default)."""

    @abstractmethod
    def default_target_modules(self, model: nn.Module) -> list[str]:
        """Module-name patterns every method adapts unless told otherwise."""

    @abstractmethod
    def encode(self, examples: Sequence[Any], tokenizer: Any) -> tuple[list[dict[str, list[int]]], int]:
        """Token features of the training examples that fit, and how many were dropped."""

    @abstractmethod
    def collate(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """One padded batch; ``labels`` is -100 wherever no loss is taken."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch, including any penalty the model's own forward would add."""

    @abstractmethod
    def evaluate(self, model: nn.Module, tokenizer: Any, sets: dict[str, list[Any]], **options: Any) -> dict:
        """Metrics per set and their summary."""
