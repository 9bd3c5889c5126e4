"""aroma-peft: adaptive-rank parameter-efficient fine-tuning (AROMA, SoRA) for transformers models."""

from .io import AdapterFileError
from .rank import effective_rank
from .tuners.aroma.config import AromaConfig
from .tuners.aroma.controller import AromaController
from .tuners.config import AdapterConfig
from .tuners.model import AdaptedModel, adapt, load
from .tuners.sora.config import SoraConfig
from .tuners.sora.controller import SoraController
from .tuners.sora.controller import param_groups as sora_param_groups
from .tuners.sora.controller import parameter_counts as sora_parameter_counts
from .tuners.sora.controller import prune as sora_prune

__all__ = [
    "AdapterConfig",
    "AdapterFileError",
    "AdaptedModel",
    "AromaCallback",
    "AromaConfig",
    "AromaController",
    "SoraCallback",
    "SoraConfig",
    "SoraController",
    "adapt",
    "effective_rank",
    "load",
    "sora_param_groups",
    "sora_parameter_counts",
    "sora_prune",
]


def __getattr__(name: str):
    # The Trainer callback imports transformers' Trainer machinery: load it only when asked for.
    if name == "AromaCallback":
        from .callbacks import AromaCallback

        return AromaCallback
    if name == "SoraCallback":
        from .tuners.sora.callback import SoraCallback

        return SoraCallback
    raise AttributeError(f"module 'aroma_peft' has no attribute {name!r}")
