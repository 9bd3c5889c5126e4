"""Adapters on a quantized base (torchao int8 / int4 weight-only, optimum-quanto, ...).

A quantized weight cannot take a learned update without rounding it to 4 or 8 bits, which would lose
most of a young piece (as bf16 loses ~30% of one, see ``aroma/layer.py``). So on a quantized base an
adapter never writes the base weight: what AROMA would fold stays a frozen low-rank stack next to it,

    y = base(x) + s * (x A_merged^T) B_merged^T + s * (x a^T) b^T,

the whole update is exported as a PEFT LoRA adapter (``export_lora``), and ``merge_and_unload`` is refused.
The base must be quantized before ``adapt`` (as PEFT's LoRA expects it).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserInputError

SCHEMES = ("int8",)  # torchao weight-only schemes this CPU runs (and PEFT's LoRA supports)


def is_quantized(layer: nn.Linear) -> bool:
    """A base whose weight is no plain float tensor: a tensor subclass (torchao ``Int8Tensor``, quanto's
    ``QTensor``) or an integer storage (bitsandbytes)."""
    weight = layer.weight
    return type(weight) not in (torch.Tensor, nn.Parameter) or not weight.dtype.is_floating_point


@torch.no_grad()
def dequantized_weight(layer: nn.Linear) -> torch.Tensor:
    """The weight the quantized base computes with, as an fp32 (m, n) tensor (for norms, not for training)."""
    weight = layer.weight
    if type(weight) not in (torch.Tensor, nn.Parameter) and hasattr(weight, "dequantize"):
        weight = weight.dequantize()
    if not weight.dtype.is_floating_point:
        raise ValueError(f"cannot dequantize a base weight of type {type(weight).__name__} ({weight.dtype})")
    return weight.float()


def refuse_merge(layer: nn.Module) -> None:
    """merge_and_unload on a quantized base would round the update into 4/8 bits: refused."""
    raise ValueError(
        f"merge_and_unload: the base Linear {layer.__class__.__name__} of this adapter is quantized, and "
        "merging would round the update into its 4/8-bit weight; use export_lora (a PEFT LoRA adapter "
        "for the same quantized base) or load the adapter onto an unquantized base and merge there"
    )


def quantize_linears(model: nn.Module, names: list[str], scheme: str = "int8") -> None:
    """Quantize the named Linear layers in place (torchao weight-only), as a user would before ``adapt``."""
    if scheme not in SCHEMES:
        raise UserInputError(f"quantize: unknown scheme {scheme!r} (choose from {', '.join(SCHEMES)})")
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise UserInputError("quantize: needs torchao (pip install 'aroma-peft[quant]')") from error
    wanted = set(names)
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda module, name: name in wanted)
