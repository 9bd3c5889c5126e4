"""ReLoRA, the paper's reduced baseline: merge and restart every fixed number of steps, never stop.

It is AROMA's machinery with the convergence criteria switched off: no inner check (``inner_criterion
= "none"``, so every piece trains exactly ``t_in = restart_every`` steps) and no outer stop
(``eps_out = 0``), with the same optimizer reset and learning-rate re-warmup after every restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tuners.aroma.config import AromaConfig
from .aroma import AromaRecipe


@dataclass
class ReloraOptions:
    r: int = field(default=8, metadata={"help": "Rank of every piece."})
    lora_alpha: float = field(default=16.0, metadata={"help": "Scale numerator (scale = alpha / r)."})
    restart_every: int = field(default=100, metadata={"help": "Steps between two merge-and-restart events."})
    warmup_steps: int | None = field(
        default=None, metadata={"help": "Initial lr warmup steps; default: warmup_ratio of the run."}
    )
    rewarmup_steps: int = field(default=20, metadata={"help": "Lr re-warmup steps after every restart."})
    optimizer_reset: str = field(
        default="prune", metadata={"help": "prune, zero or none (Adam state at a restart)."}
    )
    reset_prune_ratio: float = field(
        default=0.999, metadata={"help": "Fraction of Adam's moments zeroed by prune."}
    )

    def __post_init__(self) -> None:
        AromaConfig(
            target_modules=["check"],
            r=self.r,
            lora_alpha=self.lora_alpha,
            t_in=self.restart_every,
            rewarmup_steps=self.rewarmup_steps,
            optimizer_reset=self.optimizer_reset,
            reset_prune_ratio=self.reset_prune_ratio,
        )


class ReloraRecipe(AromaRecipe):
    name = "relora"
    Options = ReloraOptions
    default_lr = 1e-3

    def aroma_config(self, targets: list[str], heads: list[str]) -> AromaConfig:
        o = self.options
        return AromaConfig(
            target_modules=targets,
            modules_to_save=heads,
            r=o.r,
            lora_alpha=o.lora_alpha,
            inner_criterion="none",
            t_in=o.restart_every,
            check_interval=o.restart_every,  # no inner check is ever due: t_in alone ends a piece
            eps_out=0.0,
            max_steps=self.total_steps,
            warmup_steps=self.warmup_steps(o.warmup_steps),
            rewarmup_steps=o.rewarmup_steps,
            optimizer_reset=o.optimizer_reset,
            reset_prune_ratio=o.reset_prune_ratio,
            seed=self.config.seed,
        )
