"""BitFit (Ben Zaken et al. 2022): train every bias term of the model, and the head; nothing else.

The biases are found by structure (each module's own ``bias`` parameter: Linear and LayerNorm biases,
embeddings included), never by substrings of parameter names. No weight matrix changes, so ranks, LoRA
export and merging do not apply (see :class:`FrozenBaseRecipe`).
"""

from __future__ import annotations

from torch import nn

from .recipe import FrozenBaseRecipe


class BitfitRecipe(FrozenBaseRecipe):
    name = "bitfit"
    default_lr = 1e-3  # as LoRA's here, untuned

    def trained_parameters(self, model: nn.Module, targets: list[str]) -> list[str]:
        return bias_names(model)


def bias_names(model: nn.Module) -> list[str]:
    """Full names of every module's own bias parameter."""
    names = []
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if isinstance(own.get("bias"), nn.Parameter):
            names.append(f"{module_name}.bias" if module_name else "bias")
    return names
