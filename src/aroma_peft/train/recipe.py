"""The interface every fine-tuning method implements, and the registry the command line reads.

A method is one file with a :class:`Recipe` subclass (its ``name`` registers it) and an ``Options``
dataclass (its hyperparameters, which become ``aroma train`` flags; derived from the method's adapter
config where it has one, see ``options.py``). The training loop calls, in order::

    wrap(model) -> param_groups() -> start(optimizer, scheduler)
    per step: loss.backward(); optimizer.step(); after_optimizer_step(step); scheduler.step(); zero_grad()
    delta_weights(); save(directory)

and, to checkpoint and resume, ``state_dict()`` / ``load_state_dict()`` (after ``start``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UserInputError
from .config import TrainConfig, read_config_file, resume_values, split_options

RECIPES: dict[str, type[Recipe]] = {}
ADAPTER = "adapter"  # a run's sub-folder holding the trained adapter
NO_LOW_RANK = (
    "trains no low-rank update of a weight, so there is no LoRA export and nothing to merge; "
    "the run's adapter/ folder holds its trained tensors (safetensors) and config"
)


@dataclass
class NoOptions:
    """The method has no hyperparameters of its own."""


class Recipe:
    """One fine-tuning method, as the training loop sees it."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_lr: ClassVar[float] = 1e-3
    # False: the method warms the learning rate up itself (AROMA's controller re-warms after resets).
    scheduler_warmup: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            RECIPES[cls.name] = cls

    def __init__(self, config: TrainConfig, options: Any, total_steps: int) -> None:
        self.config = config
        self.options = options
        self.total_steps = total_steps
        self.model: nn.Module | None = None

    # --- building --------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        """The model to train: ``targets`` (full Linear names) adapted, ``heads`` trained in full."""
        raise NotImplementedError

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The run's weight decay on matrices (never AdamW's own default of 0.01 behind its back)."""
        return decay_groups([p for p in self.model.parameters() if p.requires_grad], lr, weight_decay)

    def start(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Called once the optimizer and the schedule exist."""

    # --- per step ----------------------------------------------------------------------------------
    def before_training_forward(self) -> None:
        """Called before each training forward, after the previous step's ``zero_grad()``."""

    def after_optimizer_step(self, step: int) -> None:
        """Called after ``optimizer.step()`` for global step ``step`` (1-based), before ``zero_grad()``."""

    @property
    def finished(self) -> bool:
        """True when the method has nothing left to train (AROMA stops on its own)."""
        return False

    def stop(self) -> bool:
        """Training ends before its planned steps (early stopping). Whether the model's function changed
        (then the loop evaluates it again)."""
        return False

    def ranks(self) -> dict[str, int]:
        """Rank of each adapted module ({} for full fine-tuning)."""
        return {}

    def adapter_parameters(self) -> int:
        """Parameters the optimizer updates now, without the head."""
        raise NotImplementedError

    def events(self) -> list[dict[str, Any]]:
        return []

    def summary(self) -> dict[str, Any]:
        """Method-specific figures for ``metrics.json`` (e.g. SoRA's parameters after pruning)."""
        return {}

    # --- checkpointing (with the model's tensors, optimizer and schedule: an exact resume) ---------------
    def state_dict(self) -> dict[str, Any]:
        """The method's own state beyond the model, optimizer and schedule (controllers, statistics)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; called after :meth:`start` on a model holding the checkpoint."""

    # --- results -----------------------------------------------------------------------------------
    def delta_weights(self) -> dict[str, torch.Tensor]:
        """The learned update dW of each adapted module, by module name."""
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError


class AdapterRecipe(Recipe):
    """A method built on this package's adapters (``tuners/``): the config decides everything else."""

    def adapter_config(self, targets: list[str], heads: list[str]) -> Any:
        """The method's ``AdapterConfig`` for this run."""
        raise NotImplementedError

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        from ..tuners.model import adapt

        self.model = adapt(model, self.adapter_config(targets, heads))
        return self.model

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return self.model.optimizer_param_groups(lr, weight_decay)

    def ranks(self) -> dict[str, int]:
        return self.model.ranks()

    def delta_weights(self) -> dict[str, torch.Tensor]:
        return {name: layer.delta_weight() for name, layer in self.model.adapter_layers().items()}

    def state_dict(self) -> dict[str, Any]:
        """The method's controller (built by ``start``) holds every decision state."""
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])

    def save(self, directory: Path) -> None:
        """Our format (``adapter/``) and the standard PEFT LoRA export (``adapter_lora/``)."""
        self.model.save_pretrained(directory / "adapter")
        if any(self.model.ranks().values()):  # PEFT cannot express an all-zero update
            self.model.export_lora(directory / "adapter_lora")


class FrozenBaseRecipe(Recipe):
    """A frozen model of which the method trains chosen parameters (BitFit's biases, bottleneck adapters)
    and the head in full.

    No weight receives a low-rank update, so ranks, ``ranks.json`` rows, LoRA export and merging do not
    apply: ``ranks()`` and ``delta_weights()`` are empty and ``export_lora`` / ``merge_and_unload``
    refuse. ``save`` writes every trained tensor (method and head) as safetensors, with a config.
    """

    def __init__(self, config: TrainConfig, options: Any, total_steps: int) -> None:
        if config.target_modules is not None:
            raise UserInputError(
                f"target_modules does not apply to method {self.name!r}: it adapts no Linear module"
            )
        super().__init__(config, options, total_steps)

    def trained_parameters(self, model: nn.Module, targets: list[str]) -> list[str]:
        """Names of the parameters the method trains besides the head (it may add modules first)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What ``load`` needs to rebuild the trained modules (saved in ``adapter_config.json``)."""
        return {}

    def wrap(self, model: nn.Module, targets: list[str], heads: list[str]) -> nn.Module:
        model.requires_grad_(False)
        names = self.trained_parameters(model, targets)
        head_names = {f"{h}.{n}" for h in heads for n, _ in model.get_submodule(h).named_parameters()}
        self.adapter_names = [n for n in names if n not in head_names]
        params = dict(model.named_parameters())
        for name in [*names, *head_names]:
            params[name].requires_grad_(True)
        self.model, self.heads = model, heads
        return model

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return decay_groups([p for p in self.model.parameters() if p.requires_grad], lr, weight_decay)

    def adapter_parameters(self) -> int:
        params = dict(self.model.named_parameters())
        return sum(params[n].numel() for n in self.adapter_names)

    def delta_weights(self) -> dict[str, torch.Tensor]:
        return {}  # no low-rank update of a weight: nothing to measure ranks on

    def save(self, directory: Path) -> None:
        """``adapter/adapter_model.safetensors`` (the trained tensors, by parameter name) and
        ``adapter/adapter_config.json`` (the method, its settings and the head's modules)."""
        from ..io import write_json, write_safetensors

        tensors = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        write_safetensors(directory / ADAPTER / "adapter_model.safetensors", tensors)
        config = {"method": self.name, "modules_to_save": self.heads, **self.settings()}
        write_json(directory / ADAPTER / "adapter_config.json", config)

    @classmethod
    def load(cls, model: nn.Module, directory: str | Path) -> nn.Module:
        """``model`` (the base model) with the trained tensors a run saved in ``directory``."""
        from ..io import AdapterFileError, read_json, read_safetensors

        config = read_json(Path(directory) / "adapter_config.json")
        if config.get("method") != cls.name:
            raise AdapterFileError(f"{directory}: holds a {config.get('method')!r} adapter, not {cls.name!r}")
        cls.rebuild(model, config)
        tensors, _ = read_safetensors(Path(directory) / "adapter_model.safetensors")
        unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
        if unexpected:
            raise AdapterFileError(f"{directory}: tensors the model does not have: {unexpected[:3]}")
        return model

    @classmethod
    def rebuild(cls, model: nn.Module, config: dict[str, Any]) -> None:
        """Add the modules the method inserted (none for BitFit)."""

    def export_lora(self, directory: Path) -> None:
        raise UserInputError(f"{self.name}: {NO_LOW_RANK}")

    def merge_and_unload(self) -> nn.Module:
        raise UserInputError(f"{self.name}: {NO_LOW_RANK}")


def decay_groups(params: list[nn.Parameter], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only, never on biases and norms (as the adapters' own groups)."""
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def get_recipe(name: str) -> type[Recipe]:
    if name not in RECIPES:
        raise UserInputError(f"unknown method {name!r}: expected one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def run_settings(values: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """One flat mapping of `aroma train` settings (``method`` included) as the TrainConfig and the
    method's options; an option of another method is named as such."""
    recipe = get_recipe(str(values.get("method") or ""))
    return split_options(values, recipe.Options, recipe.name, {n: r.Options for n, r in RECIPES.items()})


def resume_settings(given: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """``aroma train --resume``: the run's saved settings, with the flags given (see resume_values)."""
    if overwrite:
        raise UserInputError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if not given.get("output_dir"):
        raise UserInputError("--resume needs --output-dir (the run to continue)")
    path = Path(given["output_dir"]) / "config.json"
    if not path.is_file():
        raise UserInputError(f"{path.parent}: no run to resume (no config.json)")
    saved = read_config_file(path)
    return resume_values(saved, given, get_recipe(str(saved.get("method"))).Options)
