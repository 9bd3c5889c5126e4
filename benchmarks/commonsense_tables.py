"""docs/results/commonsense.md, the README's commonsense table and the learning curves, from
benchmarks/results/commonsense/*.json (the runs of benchmarks/commonsense_table.py).

    python benchmarks/commonsense_tables.py

Accuracy (%) on the first 500 test items of each set (all where fewer); ``*`` marks a set where the
accuracy is more than two standard errors above that set's majority class (binomial standard error
at the majority rate). The average is unweighted over the sets. PIQA has no training file: transfer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evidence_records import machine_note, params_at

from aroma_peft.units import fmt_params

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "commonsense"
DOCS = ROOT / "docs" / "results"
README = ROOT / "README.md"
START, END = "<!-- commonsense-table:start -->", "<!-- commonsense-table:end -->"
NAMES = {
    "base": "SmolLM2 untrained",
    "lora_r8": "LoRA r=8",
    "aroma_r1": "AROMA r=1",
    "aroma_r8": "AROMA r=8 blocks",
    "sora": "SoRA (r_max 8)",
    "aroma_r8_check": "AROMA r=8 blocks, first piece checked",
    "full": "full fine-tuning",
}
TRANSFER = {"PIQA"}


def load(results_dir: Path) -> list[dict[str, Any]]:
    """Every record, the untrained model first and then the methods in NAMES' order (unknown last)."""
    records = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    order = list(NAMES)
    return sorted(records, key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def set_names(rows: list[dict[str, Any]], mode: str) -> list[str]:
    names = sorted({n for r in rows for n in r["evaluation"].get(mode, {}).get("sets", {})})
    return sorted(names, key=lambda n: n in TRANSFER)  # transfer sets last


def accuracy_table(rows: list[dict[str, Any]], mode: str) -> str:
    """One row per method, then the majority class of each set."""
    rows = [r for r in rows if mode in r["evaluation"]]
    if not rows:
        return f"_No finished run has a {mode} evaluation yet._\n"
    names = set_names(rows, mode)
    head = ["method", *(f"{n} (transfer)" if n in TRANSFER else n for n in names), "average"]
    head += ["trainable params (initial / mean / end)", "training", "evaluation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sets = r["evaluation"][mode]["sets"]
        cells = [NAMES.get(r["label"], r["label"])]
        for n in names:
            s = sets.get(n)
            cells.append("-" if s is None else f"{s['accuracy']:.1f}{'*' if s['above_majority'] else ''}")
        cells.append(f"{r['evaluation'][mode]['average']:.1f}")
        params = " / ".join(fmt_params(params_at(r, k, "trainable_params")) for k in ("start", "mean", "end"))
        cells.append(params + (" (pruned)" if r.get("adapter_params_pruned") is not None else ""))
        cells += [hours(r.get("train_time_s")), hours(r["evaluation"][mode]["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    majority = {n: s["majority_class"] for r in rows for n, s in r["evaluation"][mode]["sets"].items()}
    cells = ["majority class", *(f"{majority[n]:.1f}" for n in names)]
    cells += [f"{sum(majority.values()) / len(majority):.1f}", "", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def valid_table(rows: list[dict[str, Any]]) -> str:
    """How often decoding produced a label of the set's family (the rest are scored wrong)."""
    rows = [r for r in rows if "generate" in r["evaluation"]]
    if not rows:
        return ""
    names = set_names(rows, "generate")
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        sets = r["evaluation"]["generate"]["sets"]
        cells = [f"{sets[n]['valid']}/{sets[n]['n']}" if n in sets else "-" for n in names]
        lines.append(f"| {NAMES.get(r['label'], r['label'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves_table(rows: list[dict[str, Any]]) -> str:
    head = ["run", "lr", "steps", "train loss, last 100", "held-out best (step)", "held-out final"]
    lines = ["| " + " | ".join([*head, "held-out majority", "test (loglik)", "test majority"]) + " |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        curve = [(e["step"], e["metrics"]["average"]) for e in r.get("held_out", [])]
        best = max(curve, key=lambda c: c[1]) if curve else None
        majority = r.get("held_out_majority", {})
        test = r["evaluation"]["loglik"]
        cells = [
            NAMES.get(r["label"], r["label"]),
            f"{r['lr']:g}",
            str(r.get("steps", "-")),
            f"{loss_windows(r)[-1][1]:.3f}" if r.get("loss") else "-",
            f"{best[1]:.1f} ({best[0]})" if best else "-",
            f"{curve[-1][1]:.1f}" if curve else "-",
            f"{sum(majority.values()) / len(majority):.1f}" if majority else "-",
            f"{test['average']:.1f}{'*' if all(s['above_majority'] for s in test['sets'].values()) else ''}",
            f"{test['majority_average']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def loss_windows(record: dict[str, Any], window: int = 100) -> list[tuple[int, float]]:
    """Mean training loss of each ``window`` steps, at the window's last step: single steps are noisy."""
    losses = record["loss"]
    return [
        (chunk[-1]["step"], sum(e["loss"] for e in chunk) / len(chunk))
        for chunk in (losses[i : i + window] for i in range(0, len(losses), window))
    ]


def plot_curves(rows: list[dict[str, Any]], path: Path) -> bool:
    """Held-out accuracy (the held-out majority class dashed) and training loss against step, one line
    per run."""
    rows = [r for r in rows if r.get("held_out")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        label = f"{NAMES.get(r['label'], r['label'])}, lr {r['lr']:g}"
        steps = [e["step"] for e in r["held_out"]]
        acc_ax.plot(steps, [e["metrics"]["average"] for e in r["held_out"]], marker=".", label=label)
        if r.get("loss"):
            loss_ax.plot(*zip(*loss_windows(r), strict=True), marker=".", label=label)
    majority = rows[0].get("held_out_majority", {})
    if majority:
        acc_ax.axhline(
            sum(majority.values()) / len(majority), color="k", ls="--", lw=1, label="majority class"
        )
    acc_ax.set_xlabel("optimizer step")
    acc_ax.set_ylabel("held-out accuracy (%, loglik)")
    acc_ax.legend(fontsize=7)
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss (mean of 100 steps)")
    loss_ax.legend(fontsize=7)
    fig.suptitle(f"SmolLM2-135M (Q4_1 dequantized) on {', '.join(sorted(majority)) or 'held-out sets'}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def headline(records: list[dict[str, Any]]) -> str:
    """The README's table: both modes, every row of the table group."""
    rows = [r for r in records if r["group"] == "table"]
    if not rows:
        return "_No run of `benchmarks/commonsense_table.py` has finished yet._\n"
    parts = []
    for mode in ("loglik", "generate"):
        parts.append(f"**{mode}**\n\n{accuracy_table(rows, mode)}")
    return "\n".join(parts) + "\n" + machine_note(rows) + "\n"


FIGURES = {"table": "commonsense-table-curves.png", "curves": "commonsense-curves.png"}


def document(records: list[dict[str, Any]], figures: dict[str, bool]) -> str:
    """The results page; ``figures``: which group's learning-curve figure (FIGURES) was drawn."""
    rows = [r for r in records if r["group"] == "table"]
    curves = [r for r in records if r["group"] == "curves"]
    text = [
        "# Commonsense results\n",
        "Generated by `benchmarks/commonsense_tables.py` from `benchmarks/results/commonsense/` (the runs of",
        "`benchmarks/commonsense_table.py`; budget and protocol in [../commonsense.md](../commonsense.md)).",
        "Accuracy (%) on the first 500 test items of each set; `*`: more than two standard errors above",
        "the set's majority class. PIQA has no training file (transfer).\n",
        "## Table 3 at this scale\n",
        headline(records),
    ]
    if rows:
        text += ["### Valid labels when decoding (generate)\n", valid_table(rows)]
    if figures.get("table"):
        text += [
            "### Learning curves (held-out slices of the training files, loglik)\n",
            f"![learning curves of the table's runs]({FIGURES['table']})\n",
        ]
    text += ["## Above the majority class? Longer runs on one set\n"]
    if curves:
        text += [curves_table(curves), machine_note(curves) + "\n"]
        if figures.get("curves"):
            text += [f"![learning curves]({FIGURES['curves']})\n"]
    else:
        text += ["_No run of the `curves` group has finished yet._\n"]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--docs-dir", type=Path, default=DOCS)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    records = load(args.results_dir)
    figures = {
        group: plot_curves([r for r in records if r["group"] == group], args.docs_dir / name)
        for group, name in FIGURES.items()
    }
    args.docs_dir.mkdir(parents=True, exist_ok=True)
    (args.docs_dir / "commonsense.md").write_text(document(records, figures))
    readme = args.readme.read_text()
    if START in readme and END in readme:
        before, rest = readme.split(START, 1)
        after = rest.split(END, 1)[1]
        args.readme.write_text(f"{before}{START}\n{headline(records)}{END}{after}")
    print(
        f"{len(records)} results -> {args.docs_dir / 'commonsense.md'}"
        + (", README" if START in readme else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
