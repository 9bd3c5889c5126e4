"""AROMA's configuration (defaults from the paper, Table 9)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import AdapterConfig, check
from .layer import AromaLinear

INNER_CRITERIA = ("paper", "abs", "delta", "none")
OUTER_CRITERIA = ("paper", "lr")
FIRST_PIECES = ("keep", "check")
OPTIMIZER_RESETS = ("prune", "zero", "none")
SYNC_MODES = ("global", "module")


@dataclass
class AromaConfig(AdapterConfig):
    """Autonomous Rank-One Matrix Adaptation: grow each update one rank-r piece at a time."""

    method = "aroma"

    eps_in: float = field(
        default=0.1,
        metadata={"help": "Inner threshold: a piece is done when its relative norm change falls below it."},
    )
    eps_out: float = field(
        default=5e-3,
        metadata={
            "help": "Outer threshold: a module is finished when a new piece's norm, relative to the "
            "weight, is below it. 0 never finishes a module (ReLoRA-style restarts)."
        },
    )
    outer_criterion: str = field(
        default="paper",
        metadata={
            "help": "'paper': the piece's norm relative to the weight; 'lr': the same ratio divided by the "
            "mean, over the piece's steps, of the lr schedule's factor (the lr used over the peak lr, "
            "without AROMA's own warmup and re-warmup), so a piece is judged by what it learned per unit "
            "of lr and a decaying schedule cannot finish a module by itself."
        },
    )
    first_piece: str = field(
        default="keep",
        metadata={
            "help": "'keep' (the reference code): a module's first piece is merged without the outer "
            "check, so no adapted module ends untrained; 'check': the first piece must pass eps_out like "
            "the rest, and a module whose first piece is too small finishes with rank 0."
        },
    )
    t_in: int = field(default=1000, metadata={"help": "Most optimizer steps one piece may train (T_in)."})
    check_interval: int = field(
        default=10, metadata={"help": "Optimizer steps between two inner checks (dT_in)."}
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Total optimizer steps T; at T every module takes its last outer decision."},
    )
    warmup_steps: int = field(default=100, metadata={"help": "Initial linear learning-rate warmup."})
    rewarmup_steps: int = field(
        default=50, metadata={"help": "Linear learning-rate re-warmup after every new piece."}
    )
    optimizer_reset: str = field(
        default="prune",
        metadata={
            "help": "Optimizer state of a module's new piece: 'prune' (randomly zero reset_prune_ratio of "
            "the moments, one mask for all of them), 'zero' (fresh state) or 'none' (paper's ablation)."
        },
    )
    reset_prune_ratio: float = field(
        default=0.999, metadata={"help": "Fraction of optimizer-state entries zeroed by 'prune'."}
    )
    inner_criterion: str = field(
        default="paper",
        metadata={
            "help": "'paper': signed relative change of ||b a||_F; 'abs': its absolute value; 'delta': "
            "||b_t a_t - b_(t-dT) a_(t-dT)||_F relative to ||b_(t-dT) a_(t-dT)||_F; 'none': only t_in."
        },
    )
    sync: str = field(
        default="global",
        metadata={
            "help": "'global' (Algorithm 1): pieces end together once every module is ready; 'module': "
            "every module runs on its own clock (needs one optimizer param group per module)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.eps_in > 0, "eps_in", self.eps_in, "use a positive threshold such as 0.1")
        check(self.eps_out >= 0, "eps_out", self.eps_out, "use a threshold >= 0 such as 5e-3")
        check(
            self.outer_criterion in OUTER_CRITERIA,
            "outer_criterion",
            self.outer_criterion,
            f"use one of {OUTER_CRITERIA}",
        )
        check(self.first_piece in FIRST_PIECES, "first_piece", self.first_piece, f"use one of {FIRST_PIECES}")
        check(self.t_in >= 1, "t_in", self.t_in, "use a number of steps >= 1")
        check(self.check_interval >= 1, "check_interval", self.check_interval, "use a number of steps >= 1")
        check(self.max_steps is None or self.max_steps >= 1, "max_steps", self.max_steps, "use None or >= 1")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "use a number of steps >= 0")
        check(self.rewarmup_steps >= 0, "rewarmup_steps", self.rewarmup_steps, "use a number of steps >= 0")
        check(
            self.optimizer_reset in OPTIMIZER_RESETS,
            "optimizer_reset",
            self.optimizer_reset,
            f"use one of {OPTIMIZER_RESETS}",
        )
        check(
            0.0 <= self.reset_prune_ratio <= 1.0,
            "reset_prune_ratio",
            self.reset_prune_ratio,
            "use a fraction in [0, 1]",
        )
        check(
            self.inner_criterion in INNER_CRITERIA,
            "inner_criterion",
            self.inner_criterion,
            f"use one of {INNER_CRITERIA}",
        )
        check(self.sync in SYNC_MODES, "sync", self.sync, f"use one of {SYNC_MODES}")

    def layer_class(self) -> type:
        return AromaLinear
