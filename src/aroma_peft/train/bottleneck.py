"""Bottleneck adapters as baselines (LoRA paper's Table 2): AdapterH (Houlsby: after the attention
output and after the feed-forward output) and AdapterP (Pfeiffer: after the feed-forward output only).

The adapters are ``aroma_peft.tuners.bottleneck``; the base model is frozen, the adapters and the head
train. No weight receives a low-rank update, so ranks, LoRA export and merging do not apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..errors import UserInputError
from ..tuners.bottleneck import BottleneckAdapter, BottleneckConfig, add_bottlenecks
from .options import MethodOptions, Override, derive_options
from .recipe import FrozenBaseRecipe


@derive_options(BottleneckConfig, ("bottleneck", "activation"))
class AdapterpOptions(MethodOptions):
    """AdapterP's hyperparameters: BottleneckConfig's (its defaults are AdapterHub's Pfeiffer ones)."""


# Where `aroma train --method adapterh` departs from BottleneckConfig on purpose.
ADAPTERH_OVERRIDES = {
    "activation": Override("AdapterHub's Houlsby configuration uses swish", default="swish"),
}


@derive_options(BottleneckConfig, ("bottleneck", "activation"), ADAPTERH_OVERRIDES)
class AdapterhOptions(MethodOptions):
    """AdapterH's hyperparameters: BottleneckConfig's, with AdapterHub's Houlsby activation."""


class AdapterpRecipe(FrozenBaseRecipe):
    name = "adapterp"
    Options = AdapterpOptions
    default_lr = 1e-3  # as LoRA's here; the learning-rate grid decides
    placement = "pfeiffer"

    def bottleneck_config(self) -> BottleneckConfig:
        return BottleneckConfig(placement=self.placement, **self.options.config_values())

    def trained_parameters(self, model: nn.Module, targets: list[str]) -> list[str]:
        try:
            self.sites = add_bottlenecks(model, self.bottleneck_config())
        except ValueError as err:  # a model without BERT-style blocks: a one-line error, not a traceback
            raise UserInputError(f"{self.name}: {err}") from None
        return [
            f"{module_name}.{name}"
            for module_name, module in model.named_modules()
            if isinstance(module, BottleneckAdapter)
            for name, _ in module.named_parameters()
        ]

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.bottleneck_config()) | {"sites": self.sites}

    @classmethod
    def rebuild(cls, model: nn.Module, config: dict[str, Any]) -> None:
        fields = {f.name for f in dataclasses.fields(BottleneckConfig)}
        add_bottlenecks(model, BottleneckConfig(**{k: v for k, v in config.items() if k in fields}))


class AdapterhRecipe(AdapterpRecipe):
    name = "adapterh"
    Options = AdapterhOptions
    placement = "houlsby"
