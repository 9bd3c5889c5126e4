"""The README's results table: GLUE dev (RTE, MRPC, CoLA, SST-2) x methods on the offline MiniLM.

Every task has one budget (epochs, batch, length, training subset) shared by every method; each run
goes to its own folder. Finished runs (with metrics.json) are skipped and interrupted ones continue
from their last checkpoint (`aroma train --resume`, saved every 10 minutes), so a table that needs
many CPU hours completes across several interrupted invocations, also built in pieces (--tasks /
--methods). Runs are sequential, one at a time.

    python benchmarks/glue_table.py                      # run what is missing, print the table
    python benchmarks/glue_table.py --tasks rte --methods aroma,full
    python benchmarks/glue_table.py --budget large       # 5x the epochs (paper-like T_in)
    python benchmarks/glue_table.py --table-only --readme README.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "glue"

# One budget per task, the same for every method. "small" fits the whole table in about 1.5 hours on
# a 2-core CPU (one torch thread, the machine being shared); "large" is 5x the epochs.
BUDGETS: dict[str, dict[str, dict[str, object]]] = {
    "small": {
        "rte": {"epochs": 1, "batch_size": 16, "max_seq_len": 128, "eval_every": 60},
        "mrpc": {"epochs": 1, "batch_size": 16, "max_seq_len": 128, "eval_every": 60},
        "cola": {
            "epochs": 1,
            "batch_size": 32,
            "max_seq_len": 64,
            "max_train_samples": 6000,
            "eval_every": 60,
        },
        "sst2": {
            "epochs": 1,
            "batch_size": 32,
            "max_seq_len": 64,
            "max_train_samples": 6000,
            "eval_every": 60,
        },
    },
    "large": {
        "rte": {"epochs": 5, "batch_size": 16, "max_seq_len": 128, "eval_every": 150},
        "mrpc": {"epochs": 5, "batch_size": 16, "max_seq_len": 128, "eval_every": 200},
        "cola": {"epochs": 5, "batch_size": 32, "max_seq_len": 64, "eval_every": 200},
        "sst2": {
            "epochs": 1,
            "batch_size": 32,
            "max_seq_len": 64,
            "max_train_samples": 30000,
            "eval_every": 200,
        },
    },
}
# AROMA's T_in (and ReLoRA's restart interval) scaled to the budget: the paper's 200 of ~2400 steps.
PIECE_STEPS = {"small": 50, "large": 200}


def method_args(budget: str, lr_factor: float = 1.0) -> dict[str, list[str]]:
    """The methods of the table and their settings (same learning rate for every adapter method)."""
    t_in = str(PIECE_STEPS[budget])
    rewarm = str(PIECE_STEPS[budget] // 5)
    methods = {
        "aroma": [
            "--method",
            "aroma",
            "--lr",
            "1e-3",
            "--t-in",
            t_in,
            "--check-interval",
            "5",
            "--rewarmup-steps",
            rewarm,
        ],
        "lora_r8": ["--method", "lora", "--lr", "1e-3", "--r", "8", "--lora-alpha", "16"],
        "lora_r1": ["--method", "lora", "--lr", "1e-3", "--r", "1", "--lora-alpha", "2"],
        "adalora": ["--method", "adalora", "--lr", "1e-3", "--init-r", "12", "--target-r", "8"],
        "relora": ["--method", "relora", "--lr", "1e-3", "--restart-every", t_in, "--rewarmup-steps", rewarm],
        "full": ["--method", "full", "--lr", "1e-4"],
        # SoRA with the reference code's settings (r_max 8, alpha 16, lambda 10, xi 3e-4, official prox)
        "sora": [
            "--method",
            "sora",
            "--lr",
            "1e-3",
            "--r-max",
            "8",
            "--lora-alpha",
            "16",
            "--sparse-lambda",
            "10",
            "--xi",
            "3e-4",
            "--prox",
            "official",
        ],
    }
    for args in methods.values():
        index = args.index("--lr") + 1
        args[index] = f"{float(args[index]) * lr_factor:g}"
    return methods


def run_name(method: str, lr_factor: float) -> str:
    return method if lr_factor == 1.0 else f"{method}-lr{lr_factor:g}x"


def run_one(
    task: str, method: str, budget: str, runs_dir: Path, threads: int, lr_factor: float = 1.0
) -> Path:
    name = run_name(method, lr_factor)
    out = runs_dir / task / name
    if (out / "metrics.json").is_file():
        print(f"skip {task}/{name}: finished", flush=True)
        return out
    args = [sys.executable, "-m", "aroma_peft.cli", "train", "--output-dir", str(out), "--quiet"]
    args += ["--threads", str(threads)]
    if latest_checkpoint(out) is not None:  # interrupted: continue where it stopped
        args.append("--resume")
    else:
        args += [
            "--task",
            task,
            "--data-dir",
            str(DATA),
            "--seed",
            "0",
            *method_args(budget, lr_factor)[method],
        ]
        for key, value in BUDGETS[budget][task].items():
            args += ["--" + key.replace("_", "-"), str(value)]
        if out.exists():
            args.append("--overwrite")  # interrupted before its first checkpoint: start it again
    log = runs_dir / "logs" / f"{task}-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'resume' if '--resume' in args else 'run'} {task}/{name} -> {out} (log {log})", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        code = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT)
    print(f"  exit {code} after {time.time() - t0:.0f} s", flush=True)
    return out


def latest_checkpoint(run: Path) -> Path | None:
    from aroma_peft.train.checkpoint import latest

    return latest(run)


def budget_text(budget: str) -> str:
    parts = []
    for task, b in BUDGETS[budget].items():
        subset = (
            f", {b['max_train_samples']} training examples"
            if "max_train_samples" in b
            else ", full train set"
        )
        parts.append(
            f"{task}: {b['epochs']} epoch(s), batch {b['batch_size']}, max length {b['max_seq_len']}{subset}"
        )
    return "; ".join(parts)


def results_section(runs_dir: Path, budget: str, tasks: list[str], methods: list[str]) -> str:
    from aroma_peft.report import markdown_table
    from aroma_peft.train.outputs import read_run

    runs, missing = [], []
    for task in tasks:
        for method in methods:
            path = runs_dir / task / method
            (runs if (path / "metrics.json").is_file() else missing).append(path)
    loaded = [read_run(p) for p in runs]
    diverged = [r for r in loaded if r["metrics"].get("diverged")]
    loaded = [r for r in loaded if not r["metrics"].get("diverged")]
    machine = loaded[0]["metrics"]["machine"] if loaded else {}
    head = loaded[0]["metrics"]["head_params"] if loaded else "?"
    args = method_args(budget)
    text = [
        "## Results",
        "",
        f"GLUE dev with the default MiniLM (all-MiniLM-L6-v2, 22M parameters), budget `{budget}` "
        f"(the same for every method): {budget_text(budget)}. Seed 0, one run each.",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores shared with other jobs, "
        f"{machine.get('torch_threads', '?')} torch thread, torch {machine.get('torch', '?')}; "
        "times are wall-clock and noisy. Adapter params count what the optimizer updates besides the head "
        f"(pooler + classifier, {head} parameters, trained by every method).",
        "Majority class on dev: RTE accuracy 52.7, MRPC accuracy 68.4 (F1 81.2), CoLA Matthews 0, SST-2 "
        'accuracy 50.9. Metrics are x100; "(stopped)": AROMA finished every module before the budget ended.',
        "Reproduce: `.venv/bin/python benchmarks/glue_table.py` (see benchmarks/README.md).",
        "",
        markdown_table(loaded).rstrip(),
        "",
        "Settings: " + "; ".join(f"{m}: `{' '.join(a)}`" for m, a in args.items() if m in methods) + ".",
    ]
    search = search_table(runs_dir, tasks, methods)
    if search:
        text += ["", "Learning-rate search (the same budget, seed 0; `--lr-factors`):", "", search.rstrip()]
    if diverged:
        names = [
            f"{Path(r['dir']).parent.name}/{Path(r['dir']).name} ({r['metrics']['diverged']})"
            for r in diverged
        ]
        text += ["", "Diverged (left out of the table): " + "; ".join(names) + "."]
    if missing:
        text += [
            "",
            "Missing (no finished run when the table was assembled): "
            + ", ".join(f"{p.parent.name}/{p.name}" for p in missing)
            + ".",
        ]
    return "\n".join(text) + "\n"


def search_table(runs_dir: Path, tasks: list[str], methods: list[str]) -> str:
    """Best dev metric of every learning rate tried (``--lr-factors``), same budget for every run."""
    from aroma_peft.train.outputs import read_run

    rows = []
    for task in tasks:
        for method in methods:
            paths = [
                p
                for p in (runs_dir / task).glob(f"{method}*")
                if p.name == method or p.name.startswith(method + "-lr")
            ]
            runs = [read_run(p) for p in paths if (p / "metrics.json").is_file()]
            if len(runs) > 1:
                scores = sorted(
                    (r["config"]["lr"], r["metrics"]["best"][r["metrics"]["main_metric"]]) for r in runs
                )
                rows.append(
                    f"| {task} | {method} | " + ", ".join(f"{lr:g}: {100 * v:.1f}" for lr, v in scores) + " |"
                )
    if not rows:
        return ""
    return "| task | method | lr: best dev metric |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def replace_section(readme: Path, section: str) -> None:
    """Put ``section`` in place of the README's "## Results" section (or append it)."""
    text = readme.read_text() if readme.is_file() else ""
    pattern = re.compile(r"^## Results\b.*?(?=^## |\Z)", re.S | re.M)
    new = (
        pattern.sub(lambda _: section + "\n", text, count=1)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(readme)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--tasks", default="rte,mrpc,cola,sst2")
    parser.add_argument("--methods", default=",".join(method_args("small")))
    parser.add_argument("--runs-dir", default=None, help="default: runs/glue_table/<budget>")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1: robust on a shared machine)"
    )
    parser.add_argument("--table-only", action="store_true", help="do not train, only assemble the table")
    parser.add_argument(
        "--lr-factors",
        default=None,
        help="learning-rate search: also run every method at lr x each factor (e.g. 0.3,3)",
    )
    parser.add_argument("--readme", default=None, help="also write the table into this README's '## Results'")
    args = parser.parse_args()
    tasks, methods = args.tasks.split(","), args.methods.split(",")
    unknown = sorted(set(tasks) - set(BUDGETS[args.budget])) + sorted(
        set(methods) - set(method_args(args.budget))
    )
    if unknown:
        parser.error(f"unknown task or method: {', '.join(unknown)}")
    runs_dir = Path(args.runs_dir or ROOT / "runs" / "glue_table" / args.budget)
    if not args.table_only:
        for task in tasks:
            for method in methods:
                for factor in [1.0, *(float(f) for f in (args.lr_factors or "").split(",") if f)]:
                    run_one(task, method, args.budget, runs_dir, args.threads, factor)
    all_tasks = [t for t in BUDGETS[args.budget] if t in tasks or args.table_only]
    if not any(runs_dir.glob("*/*/metrics.json")):
        parser.exit(2, f"glue_table.py: no finished run in {runs_dir} (run without --table-only first)\n")
    section = results_section(runs_dir, args.budget, all_tasks, list(method_args(args.budget)))
    (runs_dir / "table.md").write_text(section)
    print(section)
    if args.readme:
        replace_section(Path(args.readme), section)


if __name__ == "__main__":
    main()
