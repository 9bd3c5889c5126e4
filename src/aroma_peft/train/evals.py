"""Evaluations during training, for any task: predictions shared out over processes, metrics by the
task, SoRA's dev halves and its memorisation / generalisation study at the end of each stage."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..tasks.base import Task
from . import distributed


@torch.no_grad()
def predict(
    model: Any, task: Task, items: list[Any], batch_size: int, group: distributed.Group | None = None
) -> list[Any]:
    """The task's outcome for every item, in order (each process predicts every world-th item; the
    outcomes are gathered once)."""
    group = group or distributed.Group()
    model.eval()
    mine = list(range(group.rank, len(items), group.world))
    outcomes = task.predict(model, [items[i] for i in mine], batch_size, group.device)
    ordered: list[Any] = [None] * len(items)
    for part in distributed.gather(list(zip(mine, outcomes)), group):
        for i, v in part:
            ordered[i] = v
    return ordered


def dev_halves(features: dict[str, list]) -> dict[str, tuple[list[int], list[int]]]:
    """SoRA's protocol: per dev set, a fixed random half (seed 42, whatever the run's seed) on which
    checkpoints and learning rates are chosen, and the other half on which the chosen one is reported."""
    halves = {}
    for name, feats in features.items():
        order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(42)).tolist()
        cut = len(feats) // 2
        halves[name] = (sorted(order[:cut]), sorted(order[cut:]))
    return halves


@torch.no_grad()
def evaluate_split(
    model: Any,
    task: Task,
    items: dict[str, list],
    batch_size: int,
    group: distributed.Group | None = None,
    halves: dict[str, tuple[list[int], list[int]]] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
    """The task's metrics on every evaluation set, and with ``halves`` (:func:`dev_halves`) the same
    metrics on each half, from the same predictions: ``{"select": {...}, "report": {...}}``."""
    outcomes = {name: predict(model, task, its, batch_size, group) for name, its in items.items()}
    if not halves:
        return task.metrics(outcomes), None
    parts = {
        part: task.metrics({name: [outs[i] for i in halves[name][k]] for name, outs in outcomes.items()})
        for k, part in enumerate(("select", "report"))
    }
    return task.metrics(outcomes), parts


def evaluate_stage(model, task, event, memorization_set, items, config, writer, say, group):  # noqa: ANN001
    """At the end of a sparsifying stage: memorisation (the metric on 1,000 training examples) and
    generalisation (the dev metric), as in SoRA's study of its scheduler."""
    main = task.main_metric
    size = config.eval_batch_size
    memorization = task.metrics({"memorization": predict(model, task, memorization_set, size, group)})[main]
    generalization = evaluate_split(model, task, items, size, group)[0][main]
    record = {k: v for k, v in event.items() if k not in ("event", "step")}
    record |= {"memorization": memorization, "generalization": generalization}
    writer.log({"type": "stage", "step": event["step"], **record})
    say(
        f"stage {record.get('stage')} ends at step {event['step']}: memorisation {main} {memorization:.4f}, "
        f"generalisation {main} {generalization:.4f}"
    )
    return record


def evaluate_and_log(model, task, items, config, step, writer, say, group, halves=None) -> dict[str, Any]:  # noqa: ANN001
    t0 = time.time()
    values, parts = evaluate_split(model, task, items, config.eval_batch_size, group, halves)
    record = {"type": "eval", "step": step, "metrics": values, "eval_time_s": time.time() - t0}
    record |= parts or {}
    writer.log(record)
    shown = values | {f"select {k}": v for k, v in (parts or {}).get("select", {}).items()}
    say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return record
