"""What a run's ``metrics.json`` records: the summary of its evaluations and parameter counts, the
versions and machine behind it, and the ranks of the learned updates."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..rank import rank_stats
from . import outputs
from .recipe import Recipe

SCHEMA_VERSION = 2  # 2: versions, world_size, "end" counts after the last step, "diverged"


def summarize(task, config, evals, history, steps, total_steps, train_time, wall_time) -> dict[str, Any]:  # noqa: ANN001
    """metrics.json. Parameter counts: ``start`` is what the first step trained, ``mean`` the mean
    over steps of what each step trained, ``end`` what is trainable once the run has ended (AROMA:
    0 adapter parameters when every module finished)."""
    main = task.main_metric
    best = max(evals, key=lambda e: e["metrics"][main])
    stats = {
        key: {"start": values[0], "mean": sum(values) / len(values), "end": values[-1]} if values else None
        for key, values in history.items()
    }
    return (
        {
            "task": task.name,
            "method": config.method,
            "main_metric": main,
            "best": best["metrics"] | {"step": best["step"]},
            "final": evals[-1]["metrics"] | {"step": evals[-1]["step"]},
            "trainable_params": stats["trainable"],
            "adapter_params": stats["adapter"],
            "steps": steps,
            "planned_steps": total_steps,
            "wall_time_s": wall_time,
            "train_time_s": train_time,
            "time_per_step_s": train_time / max(1, steps),
        }
        | selected(evals, main)
        | run_info()
    )


def selected(evals: list[dict[str, Any]], main: str) -> dict[str, Any]:
    """With ``dev_split: halves``: the report half's metrics at the evaluation best on the selection
    half (the first such, so a later tie never wins), and at the last evaluation."""
    if "select" not in evals[-1]:
        return {}
    chosen = max(evals, key=lambda e: selection_score(e, main))
    return {
        "selected": chosen["report"] | {"step": chosen["step"], "selection": chosen["select"][main]},
        "final_report": evals[-1]["report"] | {"step": evals[-1]["step"]},
    }


def selection_score(record: dict[str, Any], main: str) -> float:
    """The main metric an evaluation is chosen on: the selection half's, else the whole dev set's."""
    return record["select"][main] if "select" in record else record["metrics"][main]


def early_stop_reason(
    evals: list[dict[str, Any]], main: str, patience: int | None, threshold: float
) -> str | None:
    """Why training should stop now (early stopping), or None: the last ``patience`` evaluations did
    not beat the best before them by more than ``threshold``."""
    if patience is None or len(evals) <= patience:
        return None
    scores = [selection_score(e, main) for e in evals]
    best = max(range(len(scores) - patience), key=scores.__getitem__)
    if max(scores[-patience:]) > scores[best] + threshold:
        return None
    where = "the selection half" if "select" in evals[-1] else "the evaluation sets"
    return (
        f"early stopping: {main} on {where} has not beaten {scores[best]:.4f} (step {evals[best]['step']}) "
        f"in {patience} evaluation{'s' if patience > 1 else ''}"
    )


def finish_diverged(task, config, progress, writer) -> dict[str, Any]:  # noqa: ANN001
    """A non-finite loss, gradient or parameter: no adapter is saved, the checkpoints are kept, and
    ``metrics.json`` says where the run diverged (it never counts as converged or stopped early)."""
    writer.log({"type": "diverged", "step": progress.step + 1, "message": progress.diverged})
    writer.close()
    result = {
        "task": task.name,
        "method": config.method,
        "main_metric": task.main_metric,
        "diverged": progress.diverged,
        "stopped_early": False,
        "steps": progress.step,
        "evals": progress.evals,
    } | run_info()
    writer.write_json(outputs.METRICS, result)
    return result


def delta_rank_stats(recipe: Recipe) -> dict[str, dict[str, float]]:
    """Per adapted module: the method's rank, and the numerical and effective rank of its dW."""
    ranks = recipe.ranks()
    stats = {}
    for name, dw in recipe.delta_weights().items():
        numerical, effective = rank_stats(dw.float())  # one SVD each: 150 modules of an LLM add up
        stats[name] = {
            "rank": ranks.get(name, numerical),
            "numerical_rank": numerical,
            "effective_rank": effective,
        }
    return stats


def run_info() -> dict[str, Any]:
    """What every metrics.json records about how it was made."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "transformers", "peft", "aroma-peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": versions,
        "world_size": world_size,
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    """What the timings were measured on."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in info.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch runs (AVX2, AVX512)
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def warn_if_machine_differs(saved: dict[str, Any]) -> None:
    """Exactness is promised for the same thread count on the same CPU model and kernel set."""
    now = machine()
    differ = [
        f"{k} {saved[k]} -> {now[k]}"
        for k in ("cpu", "cpu_capability", "torch_threads")
        if k in saved and saved[k] != now[k]
    ]
    if differ:
        print(
            f"aroma train: warning: resuming on another setup ({', '.join(differ)}): the run continues, "
            "but may not be bit-identical to an uninterrupted one",
            file=sys.stderr,
            flush=True,
        )
