"""AdaLoRA from the `peft` package, with its rank allocator really running every step.

PEFT only reallocates ranks when the loop calls ``update_and_allocate(global_step)`` after the
optimizer step and before ``zero_grad()`` (the stock Trainer never does, and ranks never change).
Defaults: PEFT's defaults (orthogonal regularisation 0.5, lr 5e-4, budget over the first steps) left
MiniLM at the majority class on RTE and MRPC; AdaLoRA's own GLUE scripts use regularisation 0.1, and
with it, lr 1e-3 and the budget phase between 10% and 70% of the run it learns (benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .lora import PeftRecipe, peft_false_alarms_silenced


@dataclass
class AdaloraOptions:
    init_r: int = field(default=12, metadata={"help": "Initial rank of every module."})
    target_r: int = field(default=8, metadata={"help": "Average rank per module once the budget is spent."})
    lora_alpha: float = field(default=16.0, metadata={"help": "Scale numerator (scale = alpha / rank)."})
    tinit_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps before the first pruning."})
    tfinal_ratio: float = field(
        default=0.3, metadata={"help": "Fraction of steps trained at the final ranks."}
    )
    delta_t: int = field(default=10, metadata={"help": "Steps between two budget allocations."})
    beta1: float = field(default=0.85, metadata={"help": "EMA of the sensitivity."})
    beta2: float = field(default=0.85, metadata={"help": "EMA of the uncertainty."})
    orth_reg_weight: float = field(
        default=0.1, metadata={"help": "Orthogonality penalty (PEFT default 0.5)."}
    )

    def __post_init__(self) -> None:
        if not 1 <= self.target_r <= self.init_r:
            raise ValueError(
                f"target_r={self.target_r!r} is invalid: use 1 <= target_r <= init_r={self.init_r}"
            )
        if min(self.tinit_ratio, self.tfinal_ratio) < 0 or self.tinit_ratio + self.tfinal_ratio >= 1:
            raise ValueError(
                f"tinit_ratio={self.tinit_ratio!r}, tfinal_ratio={self.tfinal_ratio!r} are invalid: "
                "use fractions whose sum is below 1 (a budget phase must remain)"
            )


class AdaloraRecipe(PeftRecipe):
    name = "adalora"
    Options = AdaloraOptions
    default_lr = 1e-3

    def peft_config(self, targets: list[str], heads: list[str]) -> Any:
        from peft import AdaLoraConfig

        o = self.options
        total = self.total_steps
        tinit, tfinal = int(o.tinit_ratio * total), int(o.tfinal_ratio * total)
        if tinit >= total - tfinal:
            tinit, tfinal = 0, 0  # too few steps for a budget phase: prune at every allocation
        return AdaLoraConfig(
            init_r=o.init_r,
            target_r=o.target_r,
            lora_alpha=o.lora_alpha,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=o.delta_t,
            beta1=o.beta1,
            beta2=o.beta2,
            orth_reg_weight=o.orth_reg_weight,
            total_step=total,
            target_modules=targets,
            modules_to_save=list(heads),
            task_type="SEQ_CLS",
        )

    def wrap(self, model, targets, heads):  # noqa: ANN001, ANN201
        wrapped = super().wrap(model, targets, heads)
        self._ranks = {name: self.options.init_r for name in self.lora_layers()}
        return wrapped

    def after_optimizer_step(self, step: int) -> None:
        # PEFT counts steps from 0; our `step` is the number of optimizer steps taken so far.
        self.model.base_model.update_and_allocate(step - 1)
        self._ranks = self.current_ranks() or self._ranks

    def current_ranks(self) -> dict[str, int]:
        """Triplets kept by the last pruning; {} if none happened now (pruned ones train on between)."""
        counts = {}
        with torch.no_grad():
            for name, layer in self.lora_layers().items():
                e = layer.lora_E["default"]
                counts[name] = int((e != 0).sum())
        return counts if any(c < self.options.init_r for c in counts.values()) else {}

    def ranks(self) -> dict[str, int]:
        return dict(self._ranks)

    def state_dict(self) -> dict[str, Any]:
        """PEFT's rank allocator keeps its importance statistics outside any state_dict, and the final
        allocation (``rank_pattern``) in the adapter's config: both are saved here."""
        allocator = self.model.base_model.rankallocator
        stats = {k: dict(getattr(allocator, k)) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")}
        return stats | {"rank_pattern": self.adalora_config().rank_pattern, "ranks": dict(self._ranks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.model.base_model.rankallocator
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, key, dict(state[key]))
        self.adalora_config().rank_pattern = state["rank_pattern"]
        self._ranks = dict(state["ranks"])

    def save(self, directory: Path) -> None:
        with peft_false_alarms_silenced():  # modules pruned to rank 0 are zero-sized tensors
            super().save(directory)

    def adalora_config(self) -> Any:
        base = self.model.base_model
        return base.peft_config[base.trainable_adapter_name]
