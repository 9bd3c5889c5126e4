"""Inference with AROMA's live piece folded into the base weight once, instead of handled at every call.

In training each forward either folds the live piece ``s b a`` into the weight of the one base matmul
(an m x n ``addmm``, tiny next to a large batch) or adds ``s (x a^T) b^T`` beside it (short batches).
Generation runs many forwards of a few tokens each, where either costs extra calls per module and
token; ``folded`` computes ``W + s b a`` once per module (the forward's own ``addmm``: a float32
model's outputs equal the training forward's up to fp32 rounding, bit for bit where it folds) and
restores the weights, unchanged, on exit."""

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
