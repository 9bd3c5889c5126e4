"""AROMA: rank-one pieces grown and stopped by the dual-loop controller (this package's core)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..tuners.aroma.config import AromaConfig
from ..tuners.aroma.controller import AromaController
from ..tuners.model import AdaptedModel, adapt
from .recipe import Recipe


@dataclass
class AromaOptions:
    """AROMA's hyperparameters (paper, Table 9), with t_in scaled down for short CPU budgets."""

    r: int = field(default=1, metadata={"help": "Rank of one piece."})
    lora_alpha: float = field(default=4.0, metadata={"help": "Scale numerator (scale = alpha / r)."})
    eps_in: float = field(
        default=0.1, metadata={"help": "Inner threshold on a piece's relative norm change."}
    )
    eps_out: float = field(
        default=5e-3, metadata={"help": "Outer threshold: smaller pieces finish the module."}
    )
    t_in: int = field(default=200, metadata={"help": "Most steps one piece may train."})
    check_interval: int = field(default=10, metadata={"help": "Steps between inner checks (dT_in)."})
    warmup_steps: int | None = field(
        default=None, metadata={"help": "Initial lr warmup steps; default: warmup_ratio of the run."}
    )
    rewarmup_steps: int = field(default=50, metadata={"help": "Lr re-warmup steps after every new piece."})
    optimizer_reset: str = field(
        default="prune", metadata={"help": "prune, zero or none (Adam state of a new piece)."}
    )
    reset_prune_ratio: float = field(
        default=0.999, metadata={"help": "Fraction of Adam's moments zeroed by prune."}
    )
    inner_criterion: str = field(default="paper", metadata={"help": "paper, abs, delta or none."})
    sync: str = field(default="global", metadata={"help": "global (pieces end together) or module."})

    def __post_init__(self) -> None:
        # AromaConfig's own validation, before any model is loaded (names the field and the fix).
        values = {k: v for k, v in asdict(self).items() if v is not None}
        AromaConfig(target_modules=["check"], **values)


class AromaRecipe(Recipe):
    name = "aroma"
    Options = AromaOptions
    default_lr = 1e-3
    scheduler_warmup = False  # the controller warms up (and re-warms after every reset) itself

    def aroma_config(self, targets: list[str], heads: list[str]) -> AromaConfig:
        o = self.options
        return AromaConfig(
            target_modules=targets,
            modules_to_save=heads,
            r=o.r,
            lora_alpha=o.lora_alpha,
            eps_in=o.eps_in,
            eps_out=o.eps_out,
            t_in=o.t_in,
            check_interval=o.check_interval,
            max_steps=self.total_steps,
            warmup_steps=self.warmup_steps(o.warmup_steps),
            rewarmup_steps=o.rewarmup_steps,
            optimizer_reset=o.optimizer_reset,
            reset_prune_ratio=o.reset_prune_ratio,
            inner_criterion=o.inner_criterion,
            sync=o.sync,
            seed=self.config.seed,
        )

    def warmup_steps(self, steps: int | None) -> int:
        return steps if steps is not None else round(self.config.warmup_ratio * self.total_steps)

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        self.model: AdaptedModel = adapt(model, self.aroma_config(targets, heads))
        return self.model

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return self.model.optimizer_param_groups(lr, weight_decay)

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.controller = AromaController(self.model, optimizer, scheduler)

    def after_optimizer_step(self, step: int) -> None:
        self.controller.step()

    @property
    def finished(self) -> bool:
        return self.controller.finished

    def ranks(self) -> dict[str, int]:
        return self.model.ranks()

    def adapter_parameters(self) -> int:
        return self.controller.trainable_parameters()

    def events(self) -> list[dict[str, Any]]:
        return self.controller.events

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])

    def delta_weights(self) -> dict[str, torch.Tensor]:
        return {name: layer.delta_weight() for name, layer in self.model.adapter_layers().items()}

    def save(self, directory: Path) -> None:
        """Our format (``adapter/``) and the standard PEFT LoRA export (``adapter_lora/``)."""
        self.model.save_pretrained(directory / "adapter")
        if any(self.model.ranks().values()):  # PEFT cannot express an all-zero update
            self.model.export_lora(directory / "adapter_lora")
