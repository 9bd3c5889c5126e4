"""The AROMA paper's time claim (Table 5: AROMA trains in 76% of LoRA r=8's time and 28.5% of
AdaLoRA's), measured as whole runs: AROMA, LoRA r=8 and AdaLoRA r=8 with the evidence plan's settings
(benchmarks/evidence.py: MRPC, batch 32, the methods' default learning rates, seed 0), trained one after
another in this process with nothing else on the machine, evaluated once at the end.

Training time is the loop's own clock around each optimizer step (data collation, forward, backward,
optimizer step, the method's controller), without evaluations, logging or checkpoints; the time per
epoch is that over the run's epochs. The load average is recorded before and after every run: pause
other jobs first (``kill -STOP``), a busy machine makes the figures meaningless.

    python benchmarks/time_claim.py --steps 345 --threads 2     # 3 epochs of MRPC per method
    python benchmarks/evidence_tables.py                        # claim 7 of docs/reproduction.md

Writes ``benchmarks/results/time/mrpc-<steps>steps.{json,md}``; run folders go to
``runs/time-claim/<steps>/<label>/`` (a finished one is reused unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import DATA, ROOT, Run  # noqa: E402  (the plan's settings: one source of truth)
from evidence_records import machine_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "time"
RUNS = ROOT / "runs" / "time-claim"
LABELS = ("aroma", "lora_r8", "adalora")
NAMES = {"aroma": "AROMA", "lora_r8": "LoRA r=8", "adalora": "AdaLoRA r=8"}
PAPER = {"lora_r8": 0.76, "adalora": 0.285}  # AROMA's training time as a share of the method's (Table 5)
TASK = "mrpc"


def time_run(label: str, steps: int, threads: int, runs_dir: Path, overwrite: bool) -> dict[str, Any]:
    """Train one method (or reuse its finished run) and return its timing record."""
    from aroma_peft.io import read_json, write_json
    from aroma_peft.train import run_settings, train
    from aroma_peft.train.outputs import read_run

    run = Run("time", TASK, label, changes={"max_steps": steps, "eval_every": steps})
    out, load_file = runs_dir / label, runs_dir / f"{label}.load.json"
    if overwrite or not (out / "metrics.json").is_file():
        before = os.getloadavg()
        config, options = run_settings(run.values(out, DATA, threads) | {"quiet": False})
        print(f"{label}: {steps} steps -> {out} (load average {before[0]:.2f})", flush=True)
        train(config, options, overwrite=out.exists())
        write_json(load_file, {"before": list(before), "after": list(os.getloadavg())})
    found = read_run(out)
    metrics = found["metrics"]
    last = [r for r in found["log"] if r["type"] == "train"][-1]
    return {
        "label": label,
        "method": run.method,
        "lr": run.lr,
        "steps": metrics["steps"],
        "planned_steps": metrics["planned_steps"],
        "stopped_early": metrics["stopped_early"],
        "epochs": last["epoch"],
        "train_time_s": metrics["train_time_s"],
        "time_per_epoch_s": metrics["train_time_s"] / last["epoch"],
        "time_per_step_s": metrics["time_per_step_s"],
        "final": metrics["final"],
        "trainable_params": metrics["trainable_params"],
        "load_average": read_json(load_file) if load_file.is_file() else None,
        "machine": metrics["machine"],
    }


def shares(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """AROMA's training time as a share of each other method's (the paper's Table 5 figures)."""
    aroma = rows["aroma"]["train_time_s"]
    return {label: aroma / row["train_time_s"] for label, row in rows.items() if label != "aroma"}


def markdown(result: dict[str, Any]) -> str:
    rows, machine = result["runs"], result["runs"]["aroma"]["machine"]
    lines = [
        f"Whole training runs, {TASK.upper()}, {result['steps']} planned steps of batch 32 (MiniLM, the "
        f"evidence plan's settings, seed 0), one method after another with nothing else running; "
        f"{machine_text(machine)}, torch {machine['torch']}. A 2-thread run alone holds the load average "
        "near 2; the figure before a run still carries the decay of the run before it.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| method | steps (stopped early) | training s | s / epoch | s / step | AROMA's share "
        "| paper's share | load average before / after | final accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        share = result["aroma_share"].get(label)
        load = row["load_average"]
        load_text = "-" if load is None else f"{load['before'][0]:.2f} / {load['after'][0]:.2f}"
        lines.append(
            f"| {NAMES[label]} | {row['steps']} ({'yes' if row['stopped_early'] else 'no'}) "
            f"| {row['train_time_s']:.0f} | {row['time_per_epoch_s']:.1f} | {row['time_per_step_s']:.3f} "
            f"| {'-' if share is None else f'{share:.0%}'} "
            f"| {'-' if label not in PAPER else f'{PAPER[label]:.1%}'} "
            f"| {load_text} "
            f"| {100 * row['final']['accuracy']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=345, help="planned optimizer steps per method")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the whole machine)")
    parser.add_argument("--overwrite", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--runs-dir", type=Path, default=RUNS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from aroma_peft.io import write_json

    runs_dir = args.runs_dir / str(args.steps)
    rows = {label: time_run(label, args.steps, args.threads, runs_dir, args.overwrite) for label in LABELS}
    result = {
        "task": TASK,
        "steps": args.steps,
        "command": f"python benchmarks/time_claim.py --steps {args.steps} --threads {args.threads}",
        "runs": rows,
        "aroma_share": shares(rows),
        "paper_share": PAPER,
    }
    stem = args.results_dir / f"{TASK}-{args.steps}steps"
    write_json(stem.with_suffix(".json"), result)
    stem.with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
