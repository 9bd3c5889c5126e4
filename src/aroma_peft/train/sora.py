"""SoRA: a gated LoRA of rank r_max whose gates a proximal step switches off (aroma_peft.tuners.sora).

The sparse penalty ``sparse_lambda * mean(|g|)`` enters through its gradient, added to the gates by an
optimizer pre-step hook (after ``loss.backward()``, before ``optimizer.step()``): the loop's loss stays
the task loss. This equals having the penalty in the loss as long as nothing rescales gradients between
the backward and the step (the loop does not clip; if it ever does, call
``controller.add_penalty_grad()`` before the backward instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import write_json
from ..tuners.model import AdaptedModel, adapt
from ..tuners.sora.config import SoraConfig
from ..tuners.sora.controller import SoraController, param_groups, parameter_counts
from .recipe import Recipe

SORA_FILE = "sora.json"


@dataclass
class SoraOptions:
    """SoRA's hyperparameters (reference code's STS-B example: lambda 10, xi 3e-4, lr 8e-4)."""

    r_max: int = field(
        default=8, metadata={"help": "Maximum rank r_max (gates switch ranks off from there)."}
    )
    lora_alpha: float = field(default=16.0, metadata={"help": "Scale numerator (scale = alpha / r_max)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    sparse_lambda: float = field(
        default=10.0, metadata={"help": "Weight of the penalty sparse_lambda * mean(|g|)."}
    )
    xi: float = field(
        default=3e-4, metadata={"help": "Proximal threshold on the gates (first stage's with a schedule)."}
    )
    xi_schedule: str | None = field(
        default=None,
        metadata={
            "help": "Sparsifying scheduler: linear, log-linear, exp-linear (xi to xi_max in xi_stages) or a "
            "comma-separated list of xi per stage."
        },
    )
    xi_max: float | None = field(
        default=None, metadata={"help": "Last stage's xi of a linear/log/exp schedule."}
    )
    xi_stages: int | None = field(
        default=None, metadata={"help": "Number of stages of a linear/log/exp schedule."}
    )
    stage_steps: int | None = field(
        default=None,
        metadata={"help": "Optimizer steps per stage; default: the run split evenly over the stages."},
    )
    prox: str = field(
        default="official", metadata={"help": "Proximal step: official (reference), soft or soft_lr."}
    )
    gate_init: str = field(default="randn", metadata={"help": "Initial gates: randn (reference) or ones."})
    gate_lr: float | None = field(default=None, metadata={"help": "Learning rate of the gates; default: lr."})

    def __post_init__(self) -> None:
        # SoraConfig's own validation, before any model is loaded (names the field and the fix).
        self.sora_config(["check"], None, seed=0, stage_steps=self.stage_steps)
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

    def sora_config(
        self, targets: list[str], heads: list[str] | None, seed: int, stage_steps: int | None
    ) -> SoraConfig:
        return SoraConfig(
            target_modules=targets,
            modules_to_save=heads,
            r=self.r_max,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            sparse_lambda=self.sparse_lambda,
            xi=self.xi,
            xi_schedule=self.schedule(),
            xi_max=self.xi_max,
            xi_stages=self.xi_stages,
            stage_steps=stage_steps,
            prox=self.prox,
            gate_init=self.gate_init,
            seed=seed,
        )


class SoraRecipe(Recipe):
    name = "sora"
    Options = SoraOptions
    default_lr = 8e-4

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        o = self.options
        stage_steps = o.stage_steps
        if stage_steps is None and o.xi_schedule is not None:
            stages = len(o.schedule()) if isinstance(o.schedule(), list) else o.xi_stages
            stage_steps = max(1, self.total_steps // stages)
        self.model: AdaptedModel = adapt(model, o.sora_config(targets, heads, self.config.seed, stage_steps))
        return self.model

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return param_groups(self.model, lr, weight_decay, gate_lr=self.options.gate_lr)

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.controller = SoraController(self.model, optimizer)
        optimizer.register_step_pre_hook(lambda *_: self.controller.add_penalty_grad())
        self._stage_events: list[dict[str, Any]] = []

    def after_optimizer_step(self, step: int) -> None:
        self.controller.step()

    def ranks(self) -> dict[str, int]:
        """Active rank (non-zero gates) per module."""
        return self.model.ranks()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])

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

    def delta_weights(self) -> dict[str, torch.Tensor]:
        return {name: layer.delta_weight() for name, layer in self.model.adapter_layers().items()}

    def save(self, directory: Path) -> None:
        """The unpruned adapter (``adapter/``, with gates), the pruned LoRA in PEFT's format
        (``adapter_lora/``) and ``sora.json``: exact parameter counts before / after pruning per
        module, the active ranks over training and the xi stages."""
        self.model.save_pretrained(directory / "adapter")
        if any(self.model.ranks().values()):  # PEFT cannot express an all-zero update
            self.model.export_lora(directory / "adapter_lora")
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
