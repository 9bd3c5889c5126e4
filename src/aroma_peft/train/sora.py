"""SoRA: a gated LoRA of rank r_max whose gates a proximal step switches off (aroma_peft.tuners.sora).

The sparse penalty ``sparse_lambda * mean(|g|)`` enters through its gradient, added to the gates at the
start of each training forward (``before_training_forward``, which the loop calls whatever part of the
model a task's loss runs; the loop zeroes gradients after every step), so the
backward accumulates the task gradient onto it: the loop's loss stays the task loss, and
``--max-grad-norm`` clips the sum exactly as if the penalty were part of the loss (as ``SoraCallback``
does at ``on_step_begin``). Without clipping the step is the same as adding the penalty after the
backward: float addition commutes.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

import torch

from ..io import write_json
from ..tuners.sora.config import SoraConfig
from ..tuners.sora.controller import SoraController, param_groups, parameter_counts
from .options import MethodOptions, Override, derive_options
from .recipe import AdapterRecipe

SORA_FILE = "sora.json"


# Where `aroma train --method sora` departs from SoraConfig on purpose.
OVERRIDES = {
    "r": Override("the flag keeps SoRA's own name r_max", name="r_max"),
    "xi_schedule": Override(
        "a flag holds text: a list of xi is given with commas",
        type=str | None,
        help="Sparsifying scheduler: linear, log-linear, exp-linear (xi to xi_max in xi_stages) or a "
        "comma-separated list of xi per stage.",
    ),
    "stage_steps": Override(
        "the training loop has no other stage clock",
        help="Optimizer steps per stage; default: the run split evenly over the stages.",
    ),
}


@derive_options(
    SoraConfig,
    (
        "r",
        "lora_alpha",
        "lora_dropout",
        "sparse_lambda",
        "xi",
        "xi_schedule",
        "xi_max",
        "xi_stages",
        "stage_steps",
        "prox",
        "gate_init",
    ),
    OVERRIDES,
)
class SoraOptions(MethodOptions):
    """SoRA's hyperparameters (reference code's STS-B example: lambda 10, xi 3e-4, lr 8e-4): SoraConfig's
    fields with the recipe's overrides, and the gates' own learning rate."""

    gate_lr: float | None = field(default=None, metadata={"help": "Learning rate of the gates; default: lr."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_lr is not None and not self.gate_lr > 0:
            raise ValueError(f"gate_lr={self.gate_lr!r} is invalid: use a positive learning rate or none")

    def schedule(self) -> str | list[float] | None:
        """A kind ('linear', ...; SoraConfig checks the name) or the list of numbers given with commas."""
        text = self.xi_schedule
        if text is None or not any(c.isdigit() for c in text):
            return text
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"xi_schedule={text!r} is invalid: use linear, log-linear, exp-linear or numbers "
                "separated by commas"
            ) from None

    def config_values(self) -> dict[str, Any]:
        return super().config_values() | {"xi_schedule": self.schedule()}


class SoraRecipe(AdapterRecipe):
    name = "sora"
    Options = SoraOptions
    default_lr = 8e-4

    def adapter_config(self, targets: list[str], heads: list[str]) -> SoraConfig:
        o = self.options
        stage_steps = o.stage_steps
        if stage_steps is None and o.xi_schedule is not None:
            stages = len(o.schedule()) if isinstance(o.schedule(), list) else o.xi_stages
            stage_steps = max(1, self.total_steps // stages)
        return SoraConfig(
            **o.config_values()
            | {
                "target_modules": targets,
                "modules_to_save": heads,
                "stage_steps": stage_steps,
                "seed": self.config.seed,
            }
        )

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return param_groups(self.model, lr, weight_decay, gate_lr=self.options.gate_lr)

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.controller = SoraController(self.model, optimizer)
        self._stage_events: list[dict[str, Any]] = []

    def before_training_forward(self) -> None:
        self.controller.add_penalty_grad()

    def after_optimizer_step(self, step: int) -> None:
        self.controller.step()

    def adapter_parameters(self) -> int:
        """What the optimizer updates: every rank up to r_max and the gates (pruning comes after)."""
        return sum(p.numel() for p in self.model.adapter_trainable_parameters())

    def events(self) -> list[dict[str, Any]]:
        """One event per finished xi stage, with the active rank at its end."""
        ends = self.controller.stage_ends
        while len(self._stage_events) < len(ends):
            end = ends[len(self._stage_events)]
            self._stage_events.append(
                {
                    "step": end["step"],
                    "event": "stage_end",
                    "stage": end["stage"],
                    "xi": end["xi"],
                    "active_rank": sum(end["ranks"].values()),
                }
            )
        return self._stage_events

    def summary(self) -> dict[str, Any]:
        """The pruned LoRA's size: ranks whose gate is exactly 0 cost nothing after pruning."""
        total = parameter_counts(self.model)["total"]
        return {"adapter_params_pruned": total["after"], "active_gates": total["active"]}

    def save(self, directory: Path) -> None:
        """The unpruned adapter (``adapter/``, with gates), the pruned LoRA in PEFT's format
        (``adapter_lora/``) and ``sora.json``: exact parameter counts before / after pruning per
        module, the active ranks over training and the xi stages."""
        super().save(directory)
        counts = parameter_counts(self.model)
        write_json(
            directory / SORA_FILE,
            {
                "parameters_before_pruning": counts["total"]["before"],
                "parameters_after_pruning": counts["total"]["after"],
                "active_gates": counts["total"]["active"],
                "modules": counts,
                "xis": self.controller.xis,
                "stage_ends": self.controller.stage_ends,
                "active_ranks": self.controller.history,
            },
        )
