"""Checkpoints that let a killed run continue exactly where it stopped.

State is captured from objects, never from the loop's variables: the model's trained tensors, and any
number of named objects with ``state_dict()`` / ``load_state_dict()`` (optimizer, schedule, the
method's recipe, the loop's progress), plus every random generator a run draws from. So any loop can
checkpoint with :func:`save` and continue with :func:`load_model` + :func:`load_states`.

Layout: ``<run>/checkpoints/step-00000120/`` holding ``adapter/`` (an :class:`AdaptedModel`'s own
save format) or ``model.safetensors`` (the trained tensors of any other model), ``state.pt`` (every
object's state and the random generators) and ``meta.json`` (step, machine). A checkpoint is written
to a hidden temporary folder and renamed into place, so a kill during a save leaves the previous
checkpoints intact; only the last ``keep`` are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import read_json, read_safetensors, write_json, write_safetensors
from ..tuners.model import AdaptedModel

FOLDER = "checkpoints"
STATE, META, MODEL, ADAPTER = "state.pt", "meta.json", "model.safetensors", "adapter"
NAME = re.compile(r"^step-(\d+)$")
SAVE_MINUTES = 10.0  # the default: one checkpoint per 10 minutes of wall time


def kill_point(point: str) -> None:
    """Test hook: ``AROMA_TEST_KILL_AT=<point>`` SIGKILLs the process there (tests/test_resume.py)."""
    if os.environ.get("AROMA_TEST_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the model's trained tensors -----------------------------------------------------------------
def trained_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes in a model that is not an AdaptedModel: its trainable parameters and its
    buffers (a PEFT LoRA's factors and head copies; every weight under full fine-tuning)."""
    trained = {name for name, _ in model.named_buffers()}
    trained |= {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().clone() for name, t in model.state_dict().items() if name in trained}


def save_model(model: nn.Module, directory: Path) -> None:
    if isinstance(model, AdaptedModel):
        # Our adapter format: loading it re-folds merged pieces into the base weight piece by piece,
        # exactly as training did, so the base weights need not be saved.
        model.save_pretrained(directory / ADAPTER)
    else:
        write_safetensors(directory / MODEL, trained_tensors(model))


def load_model(model: nn.Module, directory: Path) -> None:
    """Put a checkpoint's tensors into a freshly built model (before its controller is made)."""
    if isinstance(model, AdaptedModel):
        model.load_adapter(directory / ADAPTER)
        return
    tensors, _ = read_safetensors(directory / MODEL)
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{directory / MODEL}: tensors {result.unexpected_keys[:3]} are not in the model")


# --- random generators -------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


# --- saving and finding checkpoints -------------------------------------------------------------------
def save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    states: dict[str, Any],
    keep: int,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and drop all but the last ``keep``."""
    folder = Path(run_dir) / FOLDER
    final, tmp = folder / f"step-{step:08d}", folder / f".tmp-step-{step:08d}"
    for stale in folder.glob(".tmp-step-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, tmp)
    kill_point(f"save:{step}")
    data = {name: obj.state_dict() for name, obj in states.items()} | {"rng": rng_state()}
    torch.save(data, tmp / STATE)
    write_json(tmp / META, {"step": step, **(meta or {})})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    folder = Path(run_dir) / FOLDER
    found = [p for p in folder.iterdir() if NAME.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def meta(directory: Path) -> dict[str, Any]:
    return read_json(directory / META)


def load_states(directory: Path, states: dict[str, Any]) -> None:
    """Restore every named object, then the random generators (last: building objects draws from them)."""
    data = torch.load(directory / STATE, weights_only=True)
    for name, obj in states.items():
        obj.load_state_dict(data[name])
    set_rng_state(data["rng"])


def remove_all(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / FOLDER, ignore_errors=True)
