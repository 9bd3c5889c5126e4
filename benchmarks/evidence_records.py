"""Result records of benchmarks/evidence.py and the statistics every table and claim shares: scores
(x100, report half at the evaluation chosen on the selection half), mean ± std over seeds, the
2-standard-error test of a difference, parameter counts."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from aroma_peft.units import fmt_params

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(results_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]


def score(record: dict[str, Any], key: str = "selected") -> float | None:
    """The main metric (x100) of ``key`` ('selected' or 'final_report'); None for a diverged run."""
    part = record.get(key)
    return None if record.get("diverged") or not part else 100 * part[record["main_metric"]]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def compared(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs every table and claim compares: each method's defaults at its default learning rate,
    except on a task whose LoRA r=8 probe learned only at the fallback lr (evidence.py's group 5),
    where the methods ran at that lr instead."""
    from evidence import plan, probe_tries, waits_for

    by_id, runs = {r["id"]: r for r in records}, plan()
    moved: dict[tuple[str, str], float] = {}  # (task, model) -> the lr factor compared there
    for first in (run for run in runs if run.group == "g5" and not waits_for(run)):
        probe, found, learned, _ = probe_tries(first, runs, by_id)[-1]
        if learned and found:
            moved[(found["task"], found["model"])] = probe.lr_factor
    return [
        r for r in records if not r["variant"] and r["lr_factor"] == moved.get((r["task"], r["model"]), 1.0)
    ]


def by_cell(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in compared(records):
        cells[(f"{r['task']}" + ("" if "MiniLM" in r["model"] else f" ({r['model']})"), r["label"])].append(r)
    return cells


def params_at(record: dict[str, Any], key: str, counts: str = "adapter_params") -> float:
    """Parameters at ``key`` (start / mean / end) from the record's ``counts``; SoRA's end is the
    compact LoRA of its non-zero gates, which is what it ships."""
    pruned = record.get("adapter_params_pruned")
    return pruned if key == "end" and pruned is not None else record[counts][key]


def param_columns(runs: list[dict[str, Any]]) -> list[str]:
    """Mean adapter parameters initial / mean / end over runs, the end marked when it is a pruned LoRA."""
    if not runs:
        return [fmt_params(None)] * 3
    params = [fmt_params(statistics.fmean(params_at(r, k) for r in runs)) for k in ("start", "mean", "end")]
    if any(r.get("adapter_params_pruned") is not None for r in runs):
        params[2] += " (pruned)"
    return params


def difference(a: list[float], b: list[float]) -> tuple[float, float | None, str]:
    """Difference of means, its standard error, and the verdict (real only beyond 2 SE)."""
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, None, "indicative (one seed)"
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return diff, se, "real" if abs(diff) > 2 * se else "within the seed spread"


def grid_choice(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The learning rate a grid chooses: best on the selection half, a tie going to the lr nearest the
    default (at which the seeds run)."""
    ok = [r for r in runs if not r.get("diverged")]
    return max(ok, key=lambda r: (r["selected"]["selection"], -abs(math.log(r["lr_factor"]))), default=None)


def sora_stages(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Task -> the stage ends of its SoRA scheduler run (``sched``), in order."""
    return {
        r["task"]: r["summary"]["stages"]
        for r in records
        if r["label"] == "sora" and r["variant"] == "sched" and r.get("summary", {}).get("stages")
    }


def machine_text(machine: dict[str, Any]) -> str:
    threads = machine.get("torch_threads")
    plural = "" if threads == 1 else "s"
    return f"{machine.get('cpu')}, {machine.get('cpu_count')} cores, {threads} torch thread{plural}"


def machine_note(records: list[dict[str, Any]]) -> str:
    """The machines the records ran on, once each."""
    text = "; ".join(sorted({machine_text(r["machine"]) for r in records if r.get("machine")}))
    return f"Machine: {text or '-'} (shared with other jobs: times are noisy)."
