"""The base of every adapter layer: a wrapper around one frozen ``nn.Linear``.

A method subclasses :class:`AdapterLayer` and implements the math (``forward``), its learned update as
LoRA factors (``lora_factors``) and how a saved state is put back (``load_adapter_state``). Everything
that is not method-specific (freezing, state round trips, merging for ``merge_and_unload``) lives here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import AdapterConfig


class AdapterLayer(nn.Module):
    """Wraps ``base_layer`` (frozen) and adds a trainable update of it."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.config = config
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        for p in base_layer.parameters():
            p.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        # Code that inspects `module.weight` (dtype checks in transformers) sees the base weight.
        return self.base_layer.weight

    def new_factors(self, rank: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh LoRA factors: A Kaiming-uniform (a = sqrt(5), as nn.Linear and PEFT), B zeros."""
        w = self.base_layer.weight
        a = torch.empty(rank, self.in_features, dtype=torch.float32)
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform_(a=sqrt(5)) on a fan_in of n
        a.uniform_(-bound, bound, generator=generator)
        b = torch.zeros(self.out_features, rank, dtype=torch.float32)
        return a.to(device=w.device, dtype=self.factor_dtype), b.to(device=w.device, dtype=self.factor_dtype)

    @property
    def factor_dtype(self) -> torch.dtype:
        """The dtype of the adapter factors: the base weight's (a method may keep them in fp32)."""
        return self.base_layer.weight.dtype

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The learned update as ``scale * B @ A`` with A (rank x in) and B (out x rank)."""
        raise NotImplementedError

    @property
    def rank(self) -> int:
        """The method's own rank (AROMA: pieces kept; SoRA: non-zero gates)."""
        return self.update_rank

    @property
    def update_rank(self) -> int:
        """Rank of the update the layer applies, merges and exports (``lora_factors``)."""
        return self.lora_factors()[0].shape[0]

    def delta_weight(self) -> torch.Tensor:
        a, b, scale = self.lora_factors()
        return scale * (b @ a)

    def merged_linear(self) -> nn.Linear:
        """The base Linear with the learned update merged in (used by ``merge_and_unload``)."""
        self.base_layer.weight.data += self.delta_weight().to(self.base_layer.weight.dtype)
        return self.base_layer

    def grouped_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Adapter parameters by optimizer-group kind; a method may split off e.g. its gates."""
        return {"adapter": [p for n, p in self.named_parameters() if not n.startswith("base_layer.")]}

    def group_options(self, kind: str) -> dict[str, Any]:
        """Extra optimizer options for a group kind (e.g. no weight decay for gates)."""
        return {"kind": kind}

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Every tensor of the adapter (not of the frozen base): what a save writes."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("base_layer.")}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put a saved ``adapter_state`` back onto a fresh (unmodified) base layer."""
        self.copy_resized(state)

    def check_state(self, state: dict[str, torch.Tensor]) -> None:
        """Raise a ValueError if ``state`` cannot be loaded, before anything changes (so a bad file
        never leaves a model half-loaded): missing or unexpected tensors, shapes that differ outside
        the rank dimension, A / B factors of different ranks, non-finite values."""
        expected = self.adapter_state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"missing {missing}, unexpected {unexpected}")
        for key, value in state.items():
            self.check_shape(key, value.shape)
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"{key}: non-finite values")
        for key in state:
            partner = key[:-1] + "B"
            if key.endswith("A") and partner in state and state[key].shape[0] != state[partner].shape[1]:
                raise ValueError(
                    f"{key} has rank {state[key].shape[0]} but {partner} has rank {state[partner].shape[1]}"
                )

    def copy_resized(self, state: dict[str, torch.Tensor]) -> None:
        """Copy tensors in, resizing the ones whose rank differs (ranks change during training)."""
        self.check_state(state)
        for key, value in state.items():
            self.resize(key, value.shape)
            with torch.no_grad():
                getattr(self, key).copy_(value.to(getattr(self, key).dtype))

    def check_shape(self, key: str, shape: torch.Size) -> None:
        """Only the rank dimension of an adapter tensor may differ from this layer's."""
        current = getattr(self, key)
        rank_dims = {"A": [True, False], "B": [False, True]}.get(key[-1], [True] * current.dim())
        fits = current.dim() == len(shape) and all(
            o == n or is_rank for o, n, is_rank in zip(current.shape, shape, rank_dims)
        )
        if not fits:
            raise ValueError(f"{key}: shape {tuple(shape)} does not fit this layer's {tuple(current.shape)}")

    def resize(self, key: str, shape: torch.Size) -> None:
        """Give adapter tensor ``key`` a new shape; only its rank dimension may change."""
        current = getattr(self, key)
        if current.shape == shape:
            return
        self.check_shape(key, shape)
        new = torch.zeros(shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            new = nn.Parameter(new, requires_grad=current.requires_grad)
        setattr(self, key, new)

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        # A full-model state dict (e.g. a Trainer checkpoint) holds adapters of other ranks than a
        # freshly adapted model: resize them before the ordinary copy.
        for key in self.adapter_state():
            if prefix + key in state_dict:
                self.resize(key, state_dict[prefix + key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
