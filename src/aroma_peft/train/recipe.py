"""The interface every fine-tuning method implements, and the registry the command line reads.

A method is one file with a :class:`Recipe` subclass (its ``name`` registers it) and an ``Options``
dataclass (its hyperparameters, which become ``aroma train`` flags). The training loop calls, in order::

    wrap(model) -> param_groups() -> start(optimizer, scheduler)
    per step: loss.backward(); optimizer.step(); after_optimizer_step(step); scheduler.step(); zero_grad()
    delta_weights(); save(directory)

and, to checkpoint and resume, ``state_dict()`` / ``load_state_dict()`` (after ``start``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .config import TrainConfig

RECIPES: dict[str, type[Recipe]] = {}

# A transformer block is a numbered child of a ModuleList: encoder.layer.3, model.layers.3, h.3, ...
BLOCK = re.compile(r"(^|\.)(layer|layers|h|block|blocks)\.\d+\.")


@dataclass
class NoOptions:
    """The method has no hyperparameters of its own."""


class Recipe:
    """One fine-tuning method, as the training loop sees it."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_lr: ClassVar[float] = 1e-3
    # False: the method warms the learning rate up itself (AROMA's controller re-warms after resets).
    scheduler_warmup: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            RECIPES[cls.name] = cls

    def __init__(self, config: TrainConfig, options: Any, total_steps: int) -> None:
        self.config = config
        self.options = options
        self.total_steps = total_steps
        self.model: nn.Module | None = None

    # --- building --------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        """The model to train: ``targets`` (full Linear names) adapted, ``heads`` trained in full."""
        raise NotImplementedError

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr}]

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Called once the optimizer and the schedule exist."""

    # --- per step ----------------------------------------------------------------------------------
    def after_optimizer_step(self, step: int) -> None:
        """Called after ``optimizer.step()`` for global step ``step`` (1-based), before ``zero_grad()``."""

    @property
    def finished(self) -> bool:
        """True when the method has nothing left to train (AROMA stops on its own)."""
        return False

    def ranks(self) -> dict[str, int]:
        """Rank of each adapted module ({} for full fine-tuning)."""
        return {}

    def adapter_parameters(self) -> int:
        """Parameters the optimizer updates now, without the head."""
        raise NotImplementedError

    def events(self) -> list[dict[str, Any]]:
        return []

    def summary(self) -> dict[str, Any]:
        """Method-specific figures for ``metrics.json`` (e.g. SoRA's parameters after pruning)."""
        return {}

    # --- checkpointing (with the model's tensors, optimizer and schedule: an exact resume) ---------------
    def state_dict(self) -> dict[str, Any]:
        """The method's own state beyond the model, optimizer and schedule (controllers, statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; called after :meth:`start` on a model holding the checkpoint."""

    # --- results -----------------------------------------------------------------------------------
    def delta_weights(self) -> dict[str, torch.Tensor]:
        """The learned update dW of each adapted module, by module name."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError


def get_recipe(name: str) -> type[Recipe]:
    from ..errors import UserInputError

    if name not in RECIPES:
        raise UserInputError(f"unknown method {name!r}: expected one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def block_linears(model: nn.Module) -> list[str]:
    """Full names of every nn.Linear inside a transformer block: found by type, so never the pooler's or
    the classifier's Linear (which a substring such as "dense" would also match)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and BLOCK.search(n)]


def default_heads(model: nn.Module) -> list[str]:
    """The task head: the classifier, plus BERT's pooler (dense + tanh on [CLS]).

    The pooler is trained with the classifier because it is the first half of the classification head
    that RoBERTa (the paper's model) trains in full as ``classifier.dense``; the MiniLM encoder was
    tuned with mean pooling, so its pooler was never trained for [CLS] classification.
    """
    names = {n.rpartition(".")[2] for n, _ in model.named_modules()}
    return [h for h in ("pooler", "classifier", "score") if h in names]
