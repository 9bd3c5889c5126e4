"""``aroma report``: paper-style figures and a Markdown table from finished run folders."""

from __future__ import annotations

from pathlib import Path

from ..train.outputs import read_run
from .table import markdown_table


def write_report(run_dirs: list[str], out: str | Path, modules: list[str] | None = None) -> list[Path]:
    """Write ``fig1_training.png``, one ``fig3_<run>.png`` per run and ``table.md``; return their paths."""
    from ..io import atomic_write
    from .figures import rank_heatmaps, training_curves

    runs = [read_run(d) for d in run_dirs]
    for run, label in zip(runs, labels([Path(r["dir"]) for r in runs])):
        run["label"] = label
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [training_curves(runs, out / "fig1_training.png", modules)]
    for run in runs:
        if run["ranks"]:
            written.append(rank_heatmaps(run, out / f"fig3_{run['label'].replace('/', '_')}.png"))
    table = out / "table.md"
    atomic_write(table, lambda tmp: Path(tmp).write_text(markdown_table(runs)))
    written.append(table)
    return written


def labels(paths: list[Path]) -> list[str]:
    """Distinct short names: the folder name, with as many parent folders as needed to tell them apart."""
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


__all__ = ["markdown_table", "write_report"]
