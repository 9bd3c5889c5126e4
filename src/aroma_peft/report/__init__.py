"""``aroma report``: paper-style figures and a Markdown table from finished run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..train.outputs import METRICS, read_run
from .table import markdown_table

# What the figures and the table read from a run's metrics.json, of every schema (1: no
# schema_version; 2: versions and world_size added, "end" counts after the last step).
METRIC_KEYS = ("task", "method", "main_metric", "best", "final", "steps", "time_per_step_s", "wall_time_s")
# A diverged run ("diverged": "diverged at step N: ...") has no best / final / times: it is shown as such.
DIVERGED_KEYS = ("task", "method", "main_metric", "steps")


def write_report(run_dirs: list[str], out: str | Path, modules: list[str] | None = None) -> list[Path]:
    """Write ``fig1_training.png``, one ``fig3_<run>.png`` per run and ``table.md``; return their paths."""
    from ..io import atomic_write
    from .figures import rank_heatmaps, training_curves

    runs = [check_metrics(read_run(d)) for d in run_dirs]
    for run, label in zip(runs, labels([Path(r["dir"]) for r in runs])):
        run["label"] = label
    check_modules(runs, modules)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = [training_curves(runs, out / "fig1_training.png", modules)]
    for run in runs:
        if run["ranks"]:
            written.append(rank_heatmaps(run, out / f"fig3_{run['label'].replace('/', '_')}.png"))
    table = out / "table.md"
    atomic_write(table, lambda tmp: Path(tmp).write_text(markdown_table(runs)))
    written.append(table)
    return written


def check_metrics(run: dict[str, Any]) -> dict[str, Any]:
    """The run, once its ``metrics.json`` has every key the figures and the table read."""
    metrics = run["metrics"]
    where = Path(run["dir"]) / METRICS
    if not isinstance(metrics, dict):
        raise UserInputError(f"{where}: expected a JSON object, found a {type(metrics).__name__}")
    diverged = bool(metrics.get("diverged"))
    missing = [key for key in (DIVERGED_KEYS if diverged else METRIC_KEYS) if key not in metrics]
    main = metrics.get("main_metric")
    missing += [
        f"{key}.{main}"
        for key in ("best", "final")
        if not diverged and (not isinstance(metrics.get(key), dict) or main not in metrics[key])
    ]
    if missing:
        raise UserInputError(
            f"{where}: lacks {', '.join(dict.fromkeys(missing))} (not a complete aroma train run)"
        )
    return run


def check_modules(runs: list[dict[str, Any]], modules: list[str] | None) -> None:
    """Every module asked for by ``--modules`` has ranks in at least one run."""
    known: dict[str, None] = {}
    for run in runs:
        known |= dict.fromkeys(run["ranks"])
        for record in run["log"]:
            known |= dict.fromkeys(record.get("ranks") or {})
    unknown = [m for m in modules or [] if m not in known]
    if unknown:
        names = list(known)
        some = ", ".join(dict.fromkeys([names[0], names[len(names) // 2], names[-1]])) if names else "none"
        raise UserInputError(f"--modules: no run has a module named {unknown[0]!r}; modules include {some}")


def labels(paths: list[Path]) -> list[str]:
    """Distinct short names: the folder name, with as many parent folders as needed to tell them apart."""
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


__all__ = ["markdown_table", "write_report"]
