"""The task interface: what the generic training loop needs from a task family, and nothing about methods.

A task owns its data (files or hub), the model head it needs, how examples become batches and which
positions carry loss, and its evaluation and metrics. Methods (AROMA, LoRA, ...) wrap whatever model the
task loads and never look at the task; a new task family is a new file implementing this class.

Evaluation is split in two so that the loop can share it out over processes and score subsets (SoRA's
dev halves) from one set of predictions: ``predict`` gives one outcome per item (e.g. prediction and
gold label), ``metrics`` turns the outcomes of every set into named numbers (higher is better for
``main_metric``, on which the best evaluation is chosen).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

# A transformer block is a numbered child of a ModuleList: encoder.layer.3, model.layers.3, h.3, ...
BLOCK = re.compile(r"(^|\.)(layer|layers|h|block|blocks)\.\d+\.")


def block_linears(model: nn.Module) -> list[str]:
    """Full names of every nn.Linear inside a transformer block: found by type, so never the pooler's or
    the classifier's Linear (which a substring such as "dense" would also match)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and BLOCK.search(n)]


class Task(ABC):
    name: str  # the value of ``--task`` (GLUE: the task's own name)
    main_metric: str  # the metric evaluations during training select on
    max_seq_len: int  # tokens per training example (TrainConfig.max_seq_len, else the task's default)

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any) -> Task:
        """The task as a training run's ``TrainConfig`` sets it up (fails early on bad settings)."""

    @abstractmethod
    def load_split(
        self, data_dir: str | Path, split: str, sets: Sequence[str] | None = None, limit: int | None = None
    ) -> dict[str, list[Any]]:
        """Examples of ``split`` per evaluation set (keyed by the name metrics are reported under)."""

    @abstractmethod
    def load_data(self, config: Any) -> tuple[list[Any], dict[str, list[Any]]]:
        """A run's training examples and the sets it evaluates on during training."""

    @abstractmethod
    def load_model(self, name_or_path: str | None) -> tuple[nn.Module, Any]:
        """The pretrained model with this task's head, and its tokenizer (``None``: the task's default)."""

    @abstractmethod
    def default_target_modules(self, model: nn.Module) -> list[str]:
        """Module-name patterns every method adapts unless told otherwise."""

    def default_heads(self, model: nn.Module) -> list[str]:
        """Modules trained in full beside any method's adapters (a new classifier); none by default."""
        return []

    @abstractmethod
    def encode(self, examples: Sequence[Any], tokenizer: Any) -> tuple[list[dict[str, list[int]]], int]:
        """Token features of the training examples that fit, and how many were dropped."""

    def eval_items(self, examples: Sequence[Any], tokenizer: Any) -> list[Any]:
        """What ``predict`` takes for evaluation examples (the examples themselves by default)."""
        return list(examples)

    @abstractmethod
    def collate(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """One padded batch; ``labels`` is -100 wherever no loss is taken."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch, including any penalty the model's own forward would add."""

    @abstractmethod
    def predict(self, model: nn.Module, items: list[Any], batch_size: int, device: torch.device) -> list[Any]:
        """One outcome per item, in order, that ``metrics`` scores."""

    @abstractmethod
    def metrics(self, outcomes: dict[str, list[Any]]) -> dict[str, float]:
        """Named metrics of the outcomes of every set."""

    def final_results(
        self, model: nn.Module, tokenizer: Any, train: list[Any], config: Any
    ) -> dict[str, Any]:
        """What ``metrics.json`` adds at the end of a run (a baseline, a test evaluation); none by default."""
        return {}

    @abstractmethod
    def evaluate(self, model: nn.Module, tokenizer: Any, sets: dict[str, list[Any]], **options: Any) -> dict:
        """Metrics per set and their summary (``aroma evaluate``)."""
