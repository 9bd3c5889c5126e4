"""SoRA's configuration (defaults from the reference code's STS-B example)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import AdapterConfig, check
from .layer import SoraLinear

PROX_KINDS = ("official", "soft", "soft_lr")
GATE_INITS = ("randn", "ones")
XI_SCHEDULES = ("linear", "log-linear", "exp-linear")


@dataclass
class SoraConfig(AdapterConfig):
    """Sparse Low-rank Adaptation: a LoRA of rank ``r`` (r_max) whose ranks a gate switches off."""

    method = "sora"

    r: int = field(
        default=8, metadata={"help": "Maximum rank r_max: the rank before gates switch ranks off."}
    )
    lora_alpha: float = field(
        default=16.0,
        metadata={"help": "Scale numerator: the update is alpha / r_max * B diag(g) A, also after pruning."},
    )
    sparse_lambda: float = field(
        default=10.0,
        metadata={
            "help": "Weight eta of the sparse penalty sparse_lambda * mean(|g|) over every gate of the "
            "model (the reference code's sparse_lambda)."
        },
    )
    xi: float = field(
        default=3e-4,
        metadata={
            "help": "Threshold of the proximal step on the gates (the reference code's sparse_lambda_2); "
            "0 keeps every gate dense. With xi_schedule set to a kind, the first stage's xi (xi_0)."
        },
    )
    xi_schedule: str | list[float] | None = field(
        default=None,
        metadata={
            "help": "Sparsifying scheduler: None (one xi for the whole run), a kind 'linear', "
            "'log-linear' or 'exp-linear' from xi to xi_max over xi_stages stages (as numpy's "
            "linspace, log(linspace(exp)) and exp(linspace(log)) of the reference), or an explicit "
            "list of xi per stage."
        },
    )
    xi_max: float | None = field(
        default=None,
        metadata={"help": "Last stage's xi when xi_schedule is a kind (the reference's max_lambda)."},
    )
    xi_stages: int | None = field(
        default=None,
        metadata={"help": "Number of stages N when xi_schedule is a kind (the reference's lambda_num)."},
    )
    stage_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps per stage: the controller moves to the next xi by itself. None: the "
            "training loop calls controller.next_stage() when a stage ends (e.g. after its epochs)."
        },
    )
    prox: str = field(
        default="official",
        metadata={
            "help": "Proximal step after each optimizer step: 'official' (the reference code's double "
            "shrink: |g| < 2 xi ends at 0), 'soft' (sign(g) max(|g| - xi, 0)) or 'soft_lr' (soft with "
            "xi * lr, lr of the gates' param group)."
        },
    )
    gate_init: str = field(
        default="randn",
        metadata={"help": "Initial gates: 'randn' (standard normal, as the reference code) or 'ones'."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.sparse_lambda >= 0, "sparse_lambda", self.sparse_lambda, "use a weight >= 0 such as 10")
        check(self.xi >= 0, "xi", self.xi, "use a threshold >= 0 such as 3e-4 (0 keeps the gates dense)")
        check(self.prox in PROX_KINDS, "prox", self.prox, f"use one of {PROX_KINDS}")
        check(self.gate_init in GATE_INITS, "gate_init", self.gate_init, f"use one of {GATE_INITS}")
        self._check_schedule()

    def _check_schedule(self) -> None:
        schedule = self.xi_schedule
        if isinstance(schedule, str):
            self.xi_schedule = schedule = schedule.replace("_", "-")
            check(
                schedule in XI_SCHEDULES,
                "xi_schedule",
                schedule,
                f"use one of {XI_SCHEDULES}, a list or None",
            )
            check(
                self.xi_max is not None and self.xi_max >= 0,
                "xi_max",
                self.xi_max,
                f"xi_schedule={schedule!r} needs the last stage's xi, a number >= 0",
            )
            check(
                isinstance(self.xi_stages, int) and self.xi_stages >= 1,
                "xi_stages",
                self.xi_stages,
                f"xi_schedule={schedule!r} needs the number of stages, an integer >= 1",
            )
            if schedule == "exp-linear":
                check(self.xi > 0, "xi", self.xi, "'exp-linear' interpolates log(xi): use xi > 0")
                check(
                    self.xi_max > 0,
                    "xi_max",
                    self.xi_max,
                    "'exp-linear' interpolates log(xi): use xi_max > 0",
                )
        elif schedule is not None:
            values = list(schedule)
            check(
                len(values) > 0
                and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values),
                "xi_schedule",
                schedule,
                "give a non-empty list of thresholds >= 0, one per stage",
            )
            self.xi_schedule = [float(v) for v in values]
        if not isinstance(schedule, str):
            for name in ("xi_max", "xi_stages"):
                value = getattr(self, name)
                check(
                    value is None,
                    name,
                    value,
                    "only used with xi_schedule='linear'|'log-linear'|'exp-linear'",
                )
        check(
            self.stage_steps is None or (isinstance(self.stage_steps, int) and self.stage_steps >= 1),
            "stage_steps",
            self.stage_steps,
            "use None or a number of optimizer steps >= 1",
        )
        check(
            self.stage_steps is None or schedule is not None,
            "stage_steps",
            self.stage_steps,
            "stages need an xi_schedule; leave stage_steps None for a single xi",
        )

    def layer_class(self) -> type:
        return SoraLinear
