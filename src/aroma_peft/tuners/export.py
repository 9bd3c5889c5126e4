"""A uniform-rank LoRA export that every LoRA server reads the same way.

``AdaptedModel.export_lora`` writes each module's own rank and scale through PEFT's ``rank_pattern`` /
``alpha_pattern``; ``peft`` honours them, but servers that apply one global rank and scale (vLLM reads
only ``r`` and ``lora_alpha``) mis-scale mixed-rank adapters. Here every module gets the same rank r by
zero padding (extra rows of A and columns of B are exactly zero, so B A is unchanged), its scale is
folded into B, and ``lora_alpha = r`` so any reader's scale alpha / r is 1. No ``modules_to_save``:
vLLM refuses them, so a model with trained heads (the GLUE classifiers) must use ``export_lora``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import write_json, write_safetensors
from .model import CONFIG_NAME, WEIGHTS_NAME, AdaptedModel


def export_uniform_lora(
    model: AdaptedModel, save_directory: str | os.PathLike, rank: int | None = None
) -> int:
    """Write a PEFT LoRA adapter of one rank (default: the largest module rank); returns that rank.

    Modules that learned nothing (rank 0) are left out, as PEFT rejects r = 0. vLLM caps the rank with
    ``--max-lora-rank`` (16 unless raised): pass ``rank`` to pad to a rank the server is started with.
    """
    from peft import LoraConfig

    if model.saved_module_names:
        raise ValueError(
            f"export_uniform_lora: the model trains modules_to_save ({', '.join(model.saved_module_names)}), "
            "which vLLM refuses and this export leaves out; use export_lora"
        )
    factors = {n: layer.lora_factors() for n, layer in model.adapter_layers().items()}
    factors = {n: f for n, f in factors.items() if f[0].shape[0] > 0}
    if not factors:
        raise ValueError("export_uniform_lora: every module has rank 0, there is no LoRA update to export")
    largest = max(a.shape[0] for a, _, _ in factors.values())
    r = largest if rank is None else rank
    if r < largest:
        raise ValueError(f"rank={rank} is below the largest module rank {largest}: use rank >= {largest}")
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b, scale) in factors.items():
        p = a.shape[0]
        a_pad = torch.zeros(r, a.shape[1], dtype=a.dtype)
        b_pad = torch.zeros(b.shape[0], r, dtype=b.dtype)
        a_pad[:p], b_pad[:, :p] = a, scale * b  # scale * B A == B_pad A_pad, and alpha / r == 1 below
        tensors[f"base_model.model.{name}.lora_A.weight"] = a_pad
        tensors[f"base_model.model.{name}.lora_B.weight"] = b_pad
    names = sorted(factors)
    config = LoraConfig(r=r, lora_alpha=r, target_modules=names, lora_dropout=0.0)
    config.base_model_name_or_path = getattr(getattr(model.model, "config", None), "_name_or_path", None)
    data = config.to_dict()
    data["target_modules"] = names  # a list, not the set PEFT keeps in memory
    directory = Path(save_directory)
    write_safetensors(directory / WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    write_json(
        directory / CONFIG_NAME, {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}
    )
    return r
