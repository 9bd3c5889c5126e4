"""aroma-peft: adaptive-rank parameter-efficient fine-tuning (AROMA, SoRA) for transformers models."""

from .io import AdapterFileError
from .rank import effective_rank
from .tuners.aroma.config import AromaConfig
from .tuners.aroma.controller import AromaController
from .tuners.config import AdapterConfig
from .tuners.model import AdaptedModel, adapt, load

__all__ = [
    "AdapterConfig",
    "AdapterFileError",
    "AdaptedModel",
    "AromaCallback",
    "AromaConfig",
    "AromaController",
    "adapt",
    "effective_rank",
    "load",
]


def __getattr__(name: str):
    # The Trainer callback imports transformers' Trainer machinery: load it only when asked for.
    if name == "AromaCallback":
        from .callbacks import AromaCallback

        return AromaCallback
    raise AttributeError(f"module 'aroma_peft' has no attribute {name!r}")
