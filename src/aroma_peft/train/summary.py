"""What a user needs to judge a finished run, printed at the end of ``aroma train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..units import fmt_seconds
from .outputs import RANKS

ADAPTER_FOLDERS = {
    "adapter": "adapter",
    "adapter_lora": "PEFT LoRA export",
    "model": "fine-tuned model",
}


def run_summary(result: dict[str, Any], out: Path) -> str:
    """A few lines: the dev metric against the majority class, parameters, ranks, time and files."""
    main = result["main_metric"]
    best, final = result["best"], result["final"]
    lines = [f"done in {fmt_seconds(result['wall_time_s'])} ({result['steps']} steps)"]
    metric = f"  dev {main}: best {best[main]:.4f} (step {best['step']}), final {final[main]:.4f}"
    baseline = (result.get("majority_baseline") or {}).get(main)
    if baseline is not None:
        metric += f"; majority class {baseline:.4f} ({100 * (best[main] - baseline):+.1f} points)"
    lines.append(metric)
    params = result.get("trainable_params") or {}
    if params:
        lines.append(
            f"  trainable parameters (head included): {params['start']:,} at the start, "
            f"{params['end']:,} at the end"
        )
    ranks = read_ranks(out) if result.get("total_rank_end") is not None else []  # none for full FT
    if ranks:
        spread = (
            f"{min(ranks)} per module"
            if min(ranks) == max(ranks)
            else f"{min(ranks)} to {max(ranks)} per module"
        )
        lines.append(f"  ranks: total {sum(ranks)} over {len(ranks)} modules ({spread})")
    for folder, what in ADAPTER_FOLDERS.items():
        if (out / folder).is_dir():
            lines.append(f"  {what}: {out / folder}")
    lines.append(f"  figures and table: aroma report {out} --out {out / 'report'}")
    return "\n".join(lines)


def read_ranks(out: Path) -> list[int]:
    """Each adapted module's final rank, from ``ranks.json`` ([] for full fine-tuning)."""
    path = out / RANKS
    return [int(m["rank"]) for m in json.loads(path.read_text()).values()] if path.is_file() else []
