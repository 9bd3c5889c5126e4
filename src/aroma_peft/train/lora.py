"""LoRA from the `peft` package itself: the baseline users run today, not a re-implementation."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .recipe import Recipe

PEFT_PREFIX = "base_model.model."


@contextmanager
def peft_false_alarms_silenced() -> Iterator[None]:
    """Warnings peft 0.21 raises that ask nothing of our users. Two false alarms about AdaLoRA modules
    pruned to rank 0: at saving, that their zero-sized ``lora_A`` / ``lora_B`` are unsharded ZeRO-3 /
    FSDP tensors (the shape is the allocation); at loading, that AdaLoRA's own ``rank_pattern`` keys
    (``<module>.lora_E``) "did not match any targeted module and were ignored" (AdaLoRA resizes every
    module by them; any other unmatched key still warns). And transformers' deprecation of
    ``is_gradient_checkpointing``, which peft itself reads on every wrap and load."""
    only_lora_e = r"\[('[^']*\.lora_E'(, )?)+\]\.$"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
        warnings.filterwarnings("ignore", message=r"The following rank_pattern keys .*: " + only_lora_e)
        warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def load_peft_adapter(base: nn.Module, adapter: Path) -> nn.Module:
    """``PeftModel.from_pretrained`` without peft's false alarms."""
    from peft import PeftModel

    with peft_false_alarms_silenced():
        return PeftModel.from_pretrained(base, str(adapter))


@dataclass
class LoraOptions:
    r: int = field(default=8, metadata={"help": "LoRA rank of every adapted module."})
    lora_alpha: float = field(default=16.0, metadata={"help": "Scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r={self.r!r} is invalid: use an integer >= 1")


class PeftRecipe(Recipe):
    """What every `peft` method shares: wrapping, counting, saving; subclasses give the config."""

    def peft_config(self, targets: list[str], heads: list[str]) -> Any:
        raise NotImplementedError

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        from peft import get_peft_model

        with peft_false_alarms_silenced():
            self.model = get_peft_model(model, self.peft_config(targets, heads))
        self.head_names = heads
        return self.model

    def lora_layers(self) -> dict[str, nn.Module]:
        from peft.tuners.lora import LoraLayer

        return {
            n.removeprefix(PEFT_PREFIX): m for n, m in self.model.named_modules() if isinstance(m, LoraLayer)
        }

    def ranks(self) -> dict[str, int]:
        return {name: int(layer.r["default"]) for name, layer in self.lora_layers().items()}

    def adapter_parameters(self) -> int:
        return sum(
            p.numel() for layer in self.lora_layers().values() for p in layer.parameters() if p.requires_grad
        )

    def delta_weights(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {name: layer.get_delta_weight("default") for name, layer in self.lora_layers().items()}

    def save(self, directory: Path) -> None:
        """The PEFT adapter (``adapter/``), loadable with ``PeftModel.from_pretrained``."""
        self.model.save_pretrained(str(directory / "adapter"))


class LoraRecipe(PeftRecipe):
    name = "lora"
    Options = LoraOptions
    default_lr = 1e-3

    def peft_config(self, targets: list[str], heads: list[str]) -> Any:
        from peft import LoraConfig

        o = self.options
        return LoraConfig(
            r=o.r,
            lora_alpha=o.lora_alpha,
            lora_dropout=o.lora_dropout,
            target_modules=targets,
            modules_to_save=list(heads),  # PEFT appends its own names to this list
            task_type="SEQ_CLS",
        )
