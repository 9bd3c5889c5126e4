"""Inference with AROMA's live piece folded into the base weight once, instead of at every call.

In training the live piece ``s b a`` is folded into the weight of the one base matmul at every forward
(an m x n ``addmm``, tiny next to a batch of tokens). Generation runs many forwards of a few tokens each,
where that ``addmm`` costs as much as the matmul itself; ``folded`` computes ``W + s b a`` once per
module (the same ``addmm`` the forward does, so a float32 model's outputs are bit-identical) and
restores the weights, unchanged, on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layer import AromaLinear


@contextmanager
def folded(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with each unfinished AROMA module's live piece in its base weight, for inference only
    (no gradients reach the live piece inside). Modules with a low-precision master weight are left as
    they are."""
    layers = [m for m in model.modules() if isinstance(m, AromaLinear) and not m.is_finished]
    layers = [m for m in layers if m.master is None]
    saved = []
    with torch.no_grad():
        for m in layers:
            weight = m.base_layer.weight
            saved.append(weight.data)
            weight.data = torch.addmm(weight.data, m.lora_B, m.lora_A, alpha=m.scaling).to(weight.dtype)
            m._finished = True  # the forward is then the base layer's, on the folded weight
    try:
        yield model
    finally:
        for m, data in zip(layers, saved):
            m.base_layer.weight.data = data
            m._finished = False
