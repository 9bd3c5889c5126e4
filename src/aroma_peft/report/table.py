"""The Markdown table of runs side by side (used by ``aroma report`` and benchmarks/glue_table.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..units import fmt_params, fmt_seconds


def run_label(run: dict[str, Any]) -> str:
    """A run's name in tables and legends (``write_report`` makes them distinct)."""
    return run.get("label") or Path(run["dir"]).name


def metric_cell(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    main = run["metrics"]["main_metric"]
    extra = [k for k in metrics if k not in (main, "step")]
    cell = f"{100 * metrics[main]:.1f}"
    return cell + "".join(f" ({k} {100 * metrics[k]:.1f})" for k in extra)


def diverged_step(metrics: dict[str, Any]) -> int:
    """The step a diverged run stopped at, from "diverged at step N: ..." (else its last good step + 1)."""
    match = re.search(r"diverged at step (\d+)", str(metrics["diverged"]))
    return int(match.group(1)) if match else metrics["steps"] + 1


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per run: task, method, dev metric (best and final), parameters, rank and time."""
    header = (
        "| task | run | method | dev metric (best) | final | adapter params: initial | mean | "
        "end (SoRA: pruned) | total rank (end) | time / step | total time | steps |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for run in runs:
        m = run["metrics"]
        params = m.get("adapter_params") or {}
        steps = f"{m['steps']}" + (" (stopped)" if m.get("stopped_early") else "")
        rank = m.get("total_rank_end")
        if m.get("diverged"):  # no dev metric, size or time to compare: say where it broke
            best, final = f"{m['main_metric']} diverged at step {diverged_step(m)}", "-"
            steps = f"{m['steps']} (diverged)"
        else:
            best, final = f"{m['main_metric']} {metric_cell(m['best'], run)}", metric_cell(m["final"], run)
        cells = [
            m["task"],
            run_label(run),
            m["method"],
            best,
            final,
            fmt_params(params.get("start")),
            fmt_params(params.get("mean")),
            fmt_params(m.get("adapter_params_pruned", params.get("end"))),
            "-" if rank is None else str(rank),
            "-" if m.get("time_per_step_s") is None else f"{m['time_per_step_s']:.2f} s",
            "-" if m.get("wall_time_s") is None else fmt_seconds(m["wall_time_s"]),
            steps,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
