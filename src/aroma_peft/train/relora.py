"""ReLoRA, the paper's reduced baseline: merge and restart every fixed number of steps, never stop.

It is AROMA's machinery with the convergence criteria switched off: no inner check (``inner_criterion
= "none"``, so every piece trains exactly ``t_in = restart_every`` steps) and no outer stop
(``eps_out = 0``), with the same optimizer reset and learning-rate re-warmup after every restart.
"""

from __future__ import annotations

from typing import Any

from ..tuners.aroma.config import AromaConfig
from .aroma import AromaRecipe
from .options import MethodOptions, Override, derive_options

# Where `aroma train --method relora` departs from AromaConfig on purpose.
OVERRIDES = {
    "r": Override("ReLoRA restarts LoRA-sized pieces (the paper's baseline uses rank 8)", default=8),
    "lora_alpha": Override("alpha = 2 r, as LoRA r=8's 16", default=16.0),
    "t_in": Override(
        "a fixed restart clock, named as ReLoRA names it",
        default=100,
        name="restart_every",
        help="Steps between two merge-and-restart events.",
    ),
    "warmup_steps": Override(
        "None takes the run's warmup_ratio, as for every other method", default=None, type=int | None
    ),
    "rewarmup_steps": Override("short restarts need a short re-warmup", default=20),
}
# AromaConfig settings that make it ReLoRA (not options): no convergence test, no stop.
FIXED = {"inner_criterion": "none", "eps_out": 0.0}


@derive_options(
    AromaConfig,
    ("r", "lora_alpha", "t_in", "warmup_steps", "rewarmup_steps", "optimizer_reset", "reset_prune_ratio"),
    OVERRIDES,
)
class ReloraOptions(MethodOptions):
    """ReLoRA's hyperparameters: AromaConfig's fields, with the recipe's overrides."""

    def config_values(self) -> dict[str, Any]:
        # No inner check is ever due (check_interval = t_in): t_in alone ends a piece.
        return super().config_values() | FIXED | {"check_interval": self.restart_every}


class ReloraRecipe(AromaRecipe):
    name = "relora"
    Options = ReloraOptions
    default_lr = 1e-3
