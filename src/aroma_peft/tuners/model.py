"""Injection, saving, loading, merging and LoRA export, shared by every method."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import AdapterFileError, read_json, read_safetensors, write_json, write_safetensors
from .config import AdapterConfig, matches
from .export import portable_base_name
from .layer import AdapterLayer

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "aroma-peft"
SAVED_PREFIX = "modules_to_save."
MERGED_MARK = "aroma_merged_update"  # set on the Linear layers merge_and_unload returns


class AdaptedModel(nn.Module):
    """A transformers (or any torch) model whose targeted Linear layers carry adapters.

    Calls and unknown attributes go to the wrapped model, so it trains and generates like the original.
    ``AdaptedModel(model, config)`` is an instance of a subclass made per wrapped class (see
    :func:`adapted_class`) whose ``forward`` shows the wrapped model's signature.
    """

    def __init__(self, model: nn.Module, config: AdapterConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.saved_module_names = find_saved_modules(model, config.modules_to_save)
        targets = find_targets(model, config.target_modules, self.saved_module_names)
        model.requires_grad_(False)
        generator = torch.Generator().manual_seed(config.seed)
        layer_cls = config.layer_class()
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, layer_cls(getattr(parent, child), config, generator))
        for name in self.saved_module_names:
            model.get_submodule(name).requires_grad_(True)

    def __new__(cls, model: nn.Module | None = None, config: AdapterConfig | None = None) -> AdaptedModel:
        # AdaptedModel(model, config) builds the subclass whose forward has model's signature.
        if cls is AdaptedModel and model is not None:
            cls = adapted_class(type(model))
        return super().__new__(cls)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # The per-wrapped-class subclass is made at run time, so pickle cannot find it by name:
        # rebuild it from the wrapped class instead (pickle, torch.save and deepcopy all come here).
        return (_new_adapted, (type(self.model),), self.__getstate__())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    # --- introspection -------------------------------------------------------------------------
    def adapter_layers(self) -> dict[str, AdapterLayer]:
        """Adapter layers by module name (relative to the wrapped model), found by type."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, AdapterLayer)}

    def ranks(self) -> dict[str, int]:
        """Rank of the update each module applies now: what ``merge_and_unload`` merges and
        ``export_lora`` writes (so their totals agree). For AROMA this counts the live piece of a module
        still training; ``AromaController.ranks()`` counts only the pieces kept so far (the paper's rank).
        """
        return {name: layer.update_rank for name, layer in self.adapter_layers().items()}

    def num_trainable_parameters(self, include_saved_modules: bool = True) -> int:
        """Trainable parameters; without the saved modules (head) this is the adapter alone."""
        params = self.adapter_trainable_parameters()
        if include_saved_modules:
            params += self.saved_module_parameters()
        return sum(p.numel() for p in params)

    def adapter_trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.adapter_layers().values() for p in layer.parameters() if p.requires_grad]

    def saved_module_parameters(self) -> list[nn.Parameter]:
        return [p for name in self.saved_module_names for p in self.model.get_submodule(name).parameters()]

    def optimizer_param_groups(
        self, lr: float, weight_decay: float = 0.0, per_module: bool | None = None
    ) -> list[dict[str, Any]]:
        """Parameter groups for a torch optimizer.

        Adapter parameters get one group per kind (a method may give e.g. its gates their own kind),
        or one group per module and kind when ``per_module`` (default: AROMA's ``sync='module'``).
        Saved modules (the head) get their own group; no weight decay on biases and norms.
        """
        if per_module is None:
            per_module = getattr(self.config, "sync", "global") == "module"
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for name, layer in self.adapter_layers().items():
            for kind, params in layer.grouped_parameters().items():
                params = [p for p in params if p.requires_grad]
                if not params:
                    continue
                key = (name if per_module else "", kind)
                group = groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": weight_decay})
                group.update(layer.group_options(kind))
                group["params"].extend(params)
        head_decay, head_no_decay = [], []
        for name in self.saved_module_names:
            for p in self.model.get_submodule(name).parameters():
                (head_no_decay if p.dim() < 2 else head_decay).append(p)
        result = list(groups.values())
        result += [{"params": head_decay, "lr": lr, "weight_decay": weight_decay}] if head_decay else []
        result += [{"params": head_no_decay, "lr": lr, "weight_decay": 0.0}] if head_no_decay else []
        return result

    # --- saving, loading, merging --------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        state = {
            f"{name}.{key}": value
            for name, layer in self.adapter_layers().items()
            for key, value in layer.adapter_state().items()
        }
        for name in self.saved_module_names:
            for key, value in self.model.get_submodule(name).state_dict().items():
                state[f"{SAVED_PREFIX}{name}.{key}"] = value
        return state

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (each atomically)."""
        self.require_adapters("save_pretrained")
        directory = Path(save_directory)
        write_safetensors(directory / WEIGHTS_NAME, self.adapter_state_dict(), metadata={"format": FORMAT})
        write_json(
            directory / CONFIG_NAME,
            {
                "format": FORMAT,
                "base_model_name_or_path": portable_base_name(self.model),
                **self.config.to_dict(),
            },
        )

    def load_adapter(self, directory: str | os.PathLike) -> None:
        """Load tensors saved by ``save_pretrained`` into this model, replacing its current adapter.

        Pieces this model merged before are taken out of the base weights first, so loading into a
        trained model gives the saved model's outputs (up to rounding), not the sum of both. Every
        tensor is checked before anything changes: a bad file raises ``AdapterFileError`` (one line,
        naming the file and module) and leaves the model as it was. Only safetensors files are read:
        a pickled ``.bin`` can run code when loaded.
        """
        self.require_adapters("load_adapter")
        path = Path(directory) / WEIGHTS_NAME
        if not path.is_file():
            pickled = [
                n for n in ("adapter_model.bin", "adapter_model.pt") if (Path(directory) / n).is_file()
            ]
            if pickled:
                raise AdapterFileError(
                    f"{Path(directory) / pickled[0]}: adapters load only from {WEIGHTS_NAME} (a pickled "
                    "file can run code when loaded); convert it with safetensors.torch.save_file"
                )
        tensors, _ = read_safetensors(path)
        layers = self.adapter_layers()
        by_module: dict[str, dict[str, torch.Tensor]] = {}
        saved: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.saved_module_names}
        for key, value in tensors.items():
            if key.startswith(SAVED_PREFIX):
                owner = next((n for n in saved if key.startswith(f"{SAVED_PREFIX}{n}.")), None)
                if owner is None:
                    raise AdapterFileError(
                        f"{path}: {key!r} belongs to no module of modules_to_save {self.saved_module_names}"
                    )
                saved[owner][key[len(SAVED_PREFIX) + len(owner) + 1 :]] = value
                continue
            module, _, tensor_name = key.rpartition(".")
            if module not in layers:
                raise AdapterFileError(f"{path}: module {module!r} is not an adapted module of this model")
            by_module.setdefault(module, {})[tensor_name] = value
        for name, layer in layers.items():
            if name not in by_module:
                raise AdapterFileError(f"{path}: module {name!r} has no tensors in the file")
            try:
                layer.check_state(by_module[name])
            except ValueError as err:
                raise AdapterFileError(f"{path}: module {name!r}: {err}") from None
        for name, state in saved.items():
            check_module_state(path, name, self.model.get_submodule(name), state)
        for name, layer in layers.items():
            layer.load_adapter_state(by_module[name])
        for name, state in saved.items():
            self.model.get_submodule(name).load_state_dict(state)

    def require_adapters(self, action: str) -> None:
        # After merge_and_unload the wrapped model holds plain Linear layers: a save would be empty.
        if not self.adapter_layers():
            raise ValueError(f"{action}: the model holds no adapter layers (merge_and_unload removed them)")

    def merge_and_unload(self) -> nn.Module:
        """The wrapped model with every update merged into its Linear weights and the adapters removed.

        Each merged Linear is marked, so that ``load`` refuses to put the same adapter on top of it.
        """
        for name, layer in self.adapter_layers().items():
            parent_name, _, child = name.rpartition(".")
            linear = layer.merged_linear()
            setattr(linear, MERGED_MARK, True)
            setattr(self.model.get_submodule(parent_name), child, linear)
        return self.model

    def export_lora(
        self, save_directory: str | os.PathLike, base_model_name_or_path: str | None = None
    ) -> None:
        """Write a standard PEFT LoRA adapter that ``peft`` (and its Auto classes) load as is.

        ``base_model_name_or_path`` defaults to a portable name for the wrapped model (see
        :func:`aroma_peft.tuners.export.portable_base_name`).
        """
        from .export import export_lora

        self.require_adapters("export_lora")
        export_lora(self, Path(save_directory), base_model_name_or_path)

    def export_uniform_lora(self, save_directory: str | os.PathLike, rank: int | None = None) -> int:
        """Write a PEFT LoRA adapter of one rank and scale for every module, which servers that read only
        ``r`` and ``lora_alpha`` (vLLM) apply as ``peft`` does; returns the rank (see
        :func:`aroma_peft.tuners.export.export_uniform_lora`)."""
        from .export import export_uniform_lora

        self.require_adapters("export_uniform_lora")
        return export_uniform_lora(self, save_directory, rank)


_ADAPTED_CLASSES: dict[type, type[AdaptedModel]] = {}


def adapted_class(wrapped: type) -> type[AdaptedModel]:
    """The AdaptedModel subclass for ``wrapped`` models, made once per class.

    Its ``forward`` carries ``wrapped.forward``'s signature (through ``__wrapped__``): the Trainer
    drops every dataset column that ``inspect.signature(model.forward)`` does not name and finds the
    label names from the class's ``forward``, so ``forward(*args, **kwargs)`` would lose ``input_ids``
    and ``labels``. A class attribute, unlike a per-instance one, survives pickling and ``deepcopy``.
    """
    if wrapped not in _ADAPTED_CLASSES:

        def forward(self: AdaptedModel, *args: Any, **kwargs: Any) -> Any:
            return self.model(*args, **kwargs)  # through __call__: the wrapped model's hooks run

        functools.update_wrapper(forward, wrapped.forward)
        namespace = {"forward": forward, "__module__": __name__, "__qualname__": AdaptedModel.__qualname__}
        _ADAPTED_CLASSES[wrapped] = type(AdaptedModel.__name__, (AdaptedModel,), namespace)
    return _ADAPTED_CLASSES[wrapped]


def _new_adapted(wrapped: type) -> AdaptedModel:
    """Unpickling: an empty instance of ``wrapped``'s AdaptedModel subclass (its state comes next)."""
    return nn.Module.__new__(adapted_class(wrapped))


def adapt(model: nn.Module, config: AdapterConfig) -> AdaptedModel:
    """Freeze ``model``, put an adapter on every targeted Linear and make ``modules_to_save`` trainable."""
    return AdaptedModel(model, config)


def load(base_model: nn.Module, directory: str | os.PathLike) -> AdaptedModel:
    """Rebuild a model saved by ``AdaptedModel.save_pretrained`` on a fresh copy of its base model.

    The base must be the original model: one returned by ``merge_and_unload`` already holds an update
    in its weights (loading the adapter onto it would apply it twice) and one that still carries
    adapters would stack them, so both are refused. A bad file or a config that does not fit the
    model raises a one-line ``AdapterFileError`` and leaves ``base_model`` as it was (no adapter
    injected, nothing frozen).
    """
    config_path = Path(directory) / CONFIG_NAME
    data = read_json(config_path)
    if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
        raise AdapterFileError(f"{config_path}: not an aroma-peft adapter config (no 'format': '{FORMAT}')")
    data.pop("base_model_name_or_path", None)
    try:
        config = AdapterConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise AdapterFileError(f"{config_path}: {err}") from None
    merged = [n for n, m in base_model.named_modules() if getattr(m, MERGED_MARK, False)]
    if merged:
        raise AdapterFileError(
            f"{config_path}: module {merged[0]!r} of this model already holds a merged update "
            "(merge_and_unload): load onto the original base model, or the update would count twice"
        )
    trainable = {p: p.requires_grad for p in base_model.parameters()}
    try:
        adapted = AdaptedModel(base_model, config)
    except ValueError as err:
        raise AdapterFileError(f"{config_path}: does not fit this model: {err}") from None
    try:
        adapted.load_adapter(directory)
    except BaseException:
        for name, layer in adapted.adapter_layers().items():  # still fresh: nothing was folded in
            parent_name, _, child = name.rpartition(".")
            setattr(base_model.get_submodule(parent_name), child, layer.base_layer)
        for p, flag in trainable.items():
            p.requires_grad_(flag)
        raise
    return adapted


def find_targets(model: nn.Module, patterns: list[str] | str, exclude: list[str]) -> list[str]:
    """Names of the Linear modules matched by ``patterns``, outside the saved modules."""
    targets = []
    for name, module in model.named_modules():
        if (
            not name
            or not matches(name, patterns)
            or any(name == e or name.startswith(e + ".") for e in exclude)
        ):
            continue
        if isinstance(module, AdapterLayer):
            raise ValueError(f"module {name!r} already carries an adapter: adapt the original model")
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target_modules matched {name!r}, a {type(module).__name__}: only nn.Linear can be adapted"
            )
        targets.append(name)
    if not targets:
        linear = sorted(
            {re.sub(r"\.\d+\.", ".*.", n) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ValueError(
            f"target_modules={patterns!r} matched no nn.Linear of {type(model).__name__}; "
            f"its Linear modules are: {', '.join(linear) or 'none'}"
        )
    return targets


def find_saved_modules(model: nn.Module, patterns: list[str] | None) -> list[str]:
    if not patterns:
        return []
    found = [n for n, _ in model.named_modules() if n and matches(n, patterns)]
    # keep the outermost match only (a head and its children are one saved module)
    found = [n for n in found if not any(n.startswith(o + ".") for o in found)]
    if not found:
        raise ValueError(f"modules_to_save={patterns!r} matched no module of {type(model).__name__}")
    return found


def check_module_state(path: Path, name: str, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ``AdapterFileError`` unless ``state`` loads into ``module`` (same keys, same shapes)."""
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AdapterFileError(f"{path}: module {name!r}: missing {missing}, unexpected {unexpected}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise AdapterFileError(
                f"{path}: module {name!r}: {key}: shape {tuple(value.shape)} does not fit "
                f"this model's {tuple(expected[key].shape)}"
            )
