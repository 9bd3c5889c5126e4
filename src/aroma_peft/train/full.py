"""Full fine-tuning: every parameter trains; dW of the adapted modules is measured against a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .recipe import Recipe, decay_groups


class FullRecipe(Recipe):
    name = "full"
    default_lr = 5e-5

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        self.model = model.requires_grad_(True)
        self.targets = targets
        self.head_params = {id(p) for h in heads for p in model.get_submodule(h).parameters()}
        # Kept to measure dW = W - W0 at the end (the adapted methods' Linear weights, ~11M numbers).
        self.initial = {n: model.get_submodule(n).weight.detach().clone() for n in targets}
        return model

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups(list(self.model.parameters()), lr, weight_decay)

    def adapter_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if id(p) not in self.head_params)

    def delta_weights(self) -> dict[str, torch.Tensor]:
        return {n: self.model.get_submodule(n).weight.detach() - w0 for n, w0 in self.initial.items()}

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory / "model"))
