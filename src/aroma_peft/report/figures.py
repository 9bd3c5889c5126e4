"""Paper-style figures: Fig. 1 (training curves of several runs) and Fig. 3 (rank of every dW)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_write  # noqa: E402
from .table import diverged_step  # noqa: E402

KIND_ORDER = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
LAYER = re.compile(r"\.(\d+)\.(.+)$")  # "...layer.3.attention.self.query" -> ("3", "attention.self.query")


def save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def series(run: dict[str, Any], key: str) -> tuple[list[int], list[float]]:
    records = [r for r in run["log"] if r.get("type") == "train" and r.get(key) is not None]
    return [r["step"] for r in records], [r[key] for r in records]


def module_ranks(run: dict[str, Any], module: str) -> tuple[list[int], list[int]]:
    """A module's rank at every step (the log holds ranks only where they change: fill forward)."""
    steps, values, current = [], [], None
    for record in run["log"]:
        if record.get("type") != "train":
            continue
        current = record.get("ranks", {}).get(module, current) if "ranks" in record else current
        if current is not None:
            steps.append(record["step"])
            values.append(current)
    return steps, values


def default_modules(runs: list[dict[str, Any]]) -> list[str]:
    """Three modules spread over depth: the first, a middle and the last adapted module."""
    for run in runs:
        for record in run["log"]:
            if record.get("ranks"):
                names = list(record["ranks"])
                return list(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))
    return []


def short(module: str) -> str:
    match = LAYER.search(module)
    return f"L{match.group(1)} {match.group(2).replace('attention.self.', '')}" if match else module


def training_curves(runs: list[dict[str, Any]], path: Path, modules: list[str] | None = None) -> Path:
    """Fig. 1: trainable parameters, total rank, ranks of chosen modules and dev metric against step."""
    modules = modules or default_modules(runs)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for i, run in enumerate(runs):
        color, label = colors[i % len(colors)], run["label"]
        if run["metrics"].get("diverged"):  # its curves up to the break, and a line where it broke
            step = diverged_step(run["metrics"])
            label = f"{label} (diverged at step {step})"
            for ax in axes.flat:
                ax.axvline(step, color=color, ls=":", lw=1)
        axes[0, 0].plot(*series(run, "adapter_params"), color=color, label=label)
        steps, ranks = series(run, "total_rank")
        if steps:
            axes[0, 1].plot(steps, ranks, color=color, label=label)
        for j, module in enumerate(modules):
            steps, ranks = module_ranks(run, module)
            if steps:
                axes[1, 0].plot(
                    steps, ranks, color=color, ls=styles[j % 4], label=f"{label}: {short(module)}"
                )
        evals = [r for r in run["log"] if r.get("type") == "eval"]
        main = run["metrics"]["main_metric"]
        axes[1, 1].plot(
            [r["step"] for r in evals], [r["metrics"][main] for r in evals], "o-", color=color, label=label
        )
    titles = [
        ("Trainable adapter parameters", "parameters (without the head)"),
        ("Total rank of the update", "sum of module ranks (SoRA: non-zero gates)"),
        ("Rank of chosen modules", "rank (SoRA: non-zero gates)"),
        ("Dev metric", ", ".join(sorted({r["metrics"]["main_metric"] for r in runs}))),
    ]
    if axes[0, 0].get_lines():
        axes[0, 0].set_yscale("log")  # full fine-tuning is 100x the adapters
    for ax, (title, ylabel) in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no run has ranks", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Training: " + ", ".join(sorted({f"{r['metrics']['task']}" for r in runs})))
    fig.tight_layout()
    return save(fig, path)


def grid(ranks: dict[str, dict[str, float]], key: str) -> tuple[list[str], list[str], list[list[float]]]:
    """Rows = layers, columns = matrix kinds, cells = ``ranks[module][key]``."""
    cells: dict[tuple[str, str], float] = {}
    layers: list[str] = []
    kinds: list[str] = []
    for module, stats in ranks.items():
        match = LAYER.search(module)
        layer, kind = (match.group(1), match.group(2)) if match else ("-", module)
        layers += [layer] if layer not in layers else []
        kinds += [kind] if kind not in kinds else []
        cells[layer, kind] = stats[key]
    layers.sort(key=lambda x: int(x) if x.isdigit() else -1)
    kinds.sort(
        key=lambda k: (
            KIND_ORDER.index(k.replace("attention.self.", ""))
            if k.replace("attention.self.", "") in KIND_ORDER
            else len(KIND_ORDER),
            k,
        )
    )
    values = [[cells.get((layer, kind), float("nan")) for kind in kinds] for layer in layers]
    return layers, [k.replace("attention.self.", "") for k in kinds], values


def rank_heatmaps(run: dict[str, Any], path: Path) -> Path:
    """Fig. 3: per layer x matrix, the rank and the effective rank of the learned dW."""
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(13, 0.6 * len({LAYER.search(m).group(1) for m in run["ranks"] if LAYER.search(m)}) + 2.5),
    )
    for ax, key, title in zip(axes, ("rank", "effective_rank"), ("Rank of dW", "Effective rank of dW")):
        layers, kinds, values = grid(run["ranks"], key)
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("matrix")
        ax.set_ylabel("layer")
        ax.set_title(title)
        for y, row in enumerate(values):
            for x, v in enumerate(row):
                ax.text(
                    x,
                    y,
                    f"{v:.0f}" if key == "rank" else f"{v:.1f}",
                    ha="center",
                    va="center",
                    color="w",
                    fontsize=8,
                )
        fig.colorbar(image, ax=ax)
    m = run["metrics"]
    fig.suptitle(f"{run['label']}: {m['task']} / {m['method']}")
    fig.tight_layout()
    return save(fig, path)
