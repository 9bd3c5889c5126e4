"""AROMA: rank-one pieces grown and stopped by the dual-loop controller (this package's core)."""

from __future__ import annotations

from typing import Any

import torch

from ..tuners.aroma.config import AromaConfig
from ..tuners.aroma.controller import AromaController
from .options import MethodOptions, Override, derive_options
from .recipe import AdapterRecipe

# Where `aroma train` departs from AromaConfig (the paper's Table 9) on purpose.
OVERRIDES = {
    "t_in": Override("runs here last a few hundred steps, where 1000 would never end a piece", default=200),
    "warmup_steps": Override(
        "None takes the run's warmup_ratio, as for every other method",
        default=None,
        type=int | None,
    ),
}


@derive_options(
    AromaConfig,
    (
        "r",
        "lora_alpha",
        "eps_in",
        "eps_out",
        "outer_criterion",
        "first_piece",
        "t_in",
        "check_interval",
        "warmup_steps",
        "rewarmup_steps",
        "optimizer_reset",
        "reset_prune_ratio",
        "inner_criterion",
        "sync",
    ),
    OVERRIDES,
)
class AromaOptions(MethodOptions):
    """AROMA's hyperparameters: AromaConfig's fields, with the recipe's overrides."""


class AromaRecipe(AdapterRecipe):
    name = "aroma"
    Options = AromaOptions
    default_lr = 1e-3
    scheduler_warmup = False  # the controller warms up (and re-warms after every reset) itself

    def adapter_config(self, targets: list[str], heads: list[str]) -> AromaConfig:
        return AromaConfig(
            **self.options.config_values()
            | {
                "target_modules": targets,
                "modules_to_save": heads,
                "max_steps": self.total_steps,
                "warmup_steps": self.warmup_steps(self.options.warmup_steps),
                "seed": self.config.seed,
            }
        )

    def warmup_steps(self, steps: int | None) -> int:
        return steps if steps is not None else round(self.config.warmup_ratio * self.total_steps)

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.controller = AromaController(self.model, optimizer, scheduler)

    def after_optimizer_step(self, step: int) -> None:
        self.controller.step()

    @property
    def finished(self) -> bool:
        return self.controller.finished

    def stop(self) -> bool:
        self.controller.finish_all()
        return True  # a live piece below eps_out may have been discarded (as at the planned end)

    def ranks(self) -> dict[str, int]:
        return self.controller.ranks()  # pieces kept (the paper's rank), not the live piece

    def adapter_parameters(self) -> int:
        return self.controller.trainable_parameters()

    def events(self) -> list[dict[str, Any]]:
        return self.controller.events
