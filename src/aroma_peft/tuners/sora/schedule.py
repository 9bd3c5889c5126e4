"""The sparsifying scheduler and its stage bookkeeping, as pure functions (testable without a model)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def xi_values(kind: str, xi_0: float, xi_max: float, stages: int) -> list[float]:
    """xi of each stage, as the reference code builds its list (numpy, float64).

    linear: ``linspace(xi_0, xi_max, N)``; log-linear: ``log(linspace(exp(xi_0), exp(xi_max), N))``;
    exp-linear: ``exp(linspace(log(xi_0), log(xi_max), N))`` (geometric, needs xi_0, xi_max > 0).
    """
    if kind == "linear":
        values = np.linspace(xi_0, xi_max, stages)
    elif kind == "log-linear":
        values = np.log(np.linspace(np.exp(xi_0), np.exp(xi_max), stages))
    elif kind == "exp-linear":
        values = np.exp(np.linspace(np.log(xi_0), np.log(xi_max), stages))
    else:
        raise ValueError(f"xi_schedule={kind!r} is unknown: use 'linear', 'log-linear' or 'exp-linear'")
    return [float(v) for v in values]


def stage_xis(config: Any) -> list[float]:
    """The xi list of a ``SoraConfig``: one value without a schedule."""
    if config.xi_schedule is None:
        return [float(config.xi)]
    if isinstance(config.xi_schedule, str):
        return xi_values(config.xi_schedule, config.xi, config.xi_max, config.xi_stages)
    return [float(v) for v in config.xi_schedule]


def stage_at(step: int, stage_steps: int | None, num_stages: int) -> int:
    """Stage of the 0-based optimizer step ``step``; the last stage runs on once the list is used up."""
    if stage_steps is None:
        return 0
    return min(step // stage_steps, num_stages - 1)


def summarize_stages(
    evaluations: Iterable[Mapping[str, Any]], higher_is_better: bool = True
) -> list[dict[str, Any]]:
    """Per stage, the best memorisation and generalisation and their ratio to the first stage's best.

    ``evaluations`` are the run's evaluations, each a mapping with ``stage``, ``memorization`` (metric
    on 1,000 training examples) and ``generalization`` (dev metric); other keys (xi, active ranks) are
    taken from the stage's last evaluation. Each best is taken on its own over the stage's
    evaluations, as in the paper's study. A ratio is NaN when the first stage's best is 0.
    """
    best = max if higher_is_better else min
    stages: dict[int, dict[str, Any]] = {}
    for record in evaluations:
        stage = int(record["stage"])
        row = stages.setdefault(stage, {"stage": stage, "memorization": [], "generalization": []})
        for key in ("memorization", "generalization"):
            row[key].append(float(record[key]))
        row.update({k: v for k, v in record.items() if k not in ("stage", "memorization", "generalization")})
    rows = [stages[s] for s in sorted(stages)]
    for row in rows:
        row["memorization"] = best(row["memorization"])
        row["generalization"] = best(row["generalization"])
    if rows:
        first = rows[0]
        for row in rows:
            for key in ("memorization", "generalization"):
                row[f"{key}_ratio"] = row[key] / first[key] if first[key] != 0 else math.nan
    return rows
