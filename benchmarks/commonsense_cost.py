"""What commonsense training and evaluation cost on this machine: the figures the budget is chosen from.

Each measurement runs in its own subprocess, so its peak memory (``ru_maxrss``) is its own:

- ``train METHOD``: ``aroma train --task commonsense`` as the table runs it (the training mixture of
  every ``train.json``, response-only loss, cutoff 256, dynamic padding, batches grouped by length),
  a few optimizer steps; seconds per step after the first (forward, backward, optimizer step).
- ``eval MODE``: the prepared SmolLM2, untrained, on the first N test items of ARC-Easy and of BoolQ;
  one item of each set first as a warm-up (not timed), then seconds per item.

    python benchmarks/commonsense_cost.py --methods lora,aroma --steps 4 --modes loglik,generate --items 50

The machine's load average is printed before and after: on a shared machine the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "commonsense"
SETS = ("ARC-Easy", "BoolQ")


def measure_train(method: str, options: dict, data_dir: Path, steps: int, batch: int, cutoff: int) -> dict:
    """Seconds per optimizer step of a short ``aroma train`` run (the first step is a warm-up)."""
    from aroma_peft.train import loop, run_settings, train

    times: list[float] = []
    cpu: list[float] = []  # process CPU seconds (all threads): what a core-hour budget counts
    ends: list[float] = []
    step = loop.optimizer_step

    def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start, start_cpu = time.perf_counter(), time.process_time()
        result = step(*args, **kwargs)
        ends.append(time.perf_counter())
        times.append(ends[-1] - start)
        cpu.append(time.process_time() - start_cpu)
        return result

    loop.optimizer_step = timed
    with tempfile.TemporaryDirectory() as out:
        values = {
            "task": "commonsense",
            "method": method,
            "data_dir": str(data_dir),
            "output_dir": out,
            "max_steps": steps,
            "batch_size": batch,
            "max_seq_len": cutoff,
            "eval_every": 10**6,  # no evaluation during these steps
            "eval_sets": ["ARC-Challenge"],
            "max_eval_samples": 1,  # the run's final test evaluation: one item
            "quiet": True,
        } | options
        config, opts = run_settings(values)
        start = time.perf_counter()
        metrics = train(config, opts, overwrite=True)
        end = time.perf_counter()
    return {
        "method": method,
        "options": options,
        "batch_size": batch,
        "cutoff": cutoff,
        "step_s": times,
        "median_s_per_step_after_first": statistics.median(times[1:]) if len(times) > 1 else None,
        "step_cpu_s": cpu,
        "median_cpu_s_per_step_after_first": statistics.median(cpu[1:]) if len(cpu) > 1 else None,
        "trainable_params": metrics["trainable_params"]["start"],
        "before_first_step_s": ends[0] - times[0] - start,  # loading, tokenizing the mixture
        "after_last_step_s": end
        - ends[-1],  # held-out and test evaluation of 1 item, rank statistics, saving
    }


def measure_eval(mode: str, data_dir: Path, items: int, batch: int) -> dict:
    """Seconds per item of the untrained model on the first ``items`` of each set (after a warm-up)."""
    from aroma_peft.tasks import get_task

    task = get_task("commonsense")
    model, tokenizer = task.load_model(None)
    sets = task.load_split(data_dir, "test", list(SETS), items + 1)
    task.evaluate(model, tokenizer, {k: v[:1] for k, v in sets.items()}, mode=mode, progress=False)
    timed = {k: v[1:] for k, v in sets.items()}
    start, start_cpu = time.perf_counter(), time.process_time()
    result = task.evaluate(model, tokenizer, timed, mode=mode, batch_size=batch, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    n = sum(len(v) for v in timed.values())
    return {
        "mode": mode,
        "items": n,
        "batch_size": batch,
        "seconds": seconds,
        "s_per_item": seconds / n,
        "cpu_s_per_item": cpu / n,
        "per_set": {
            k: {"accuracy": s["accuracy"], "seconds": s["seconds"]} for k, s in result["sets"].items()
        },
    }


METHODS = {  # the table's settings (benchmarks/commonsense_table.py)
    "lora": {"r": 8, "lora_alpha": 16},
    "aroma": {"r": 1},
}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    kind, name = args.child
    if kind == "train":
        result = measure_train(
            name, METHODS.get(name, {}), args.data_dir, args.steps, args.batch, args.cutoff
        )
    else:
        result = measure_eval(name, args.data_dir, args.items, args.eval_batch)
    result |= {
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": args.threads,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="lora,aroma", help="comma-separated; empty: none")
    parser.add_argument("--modes", default="loglik,generate", help="comma-separated; empty: none")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per method (first = warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cutoff", type=int, default=256)
    parser.add_argument("--items", type=int, default=50, help="timed test items per set (ARC-Easy, BoolQ)")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--output", type=Path, help="also write every result to this JSON file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    jobs = [("train", m) for m in args.methods.split(",") if m]
    jobs += [("eval", m) for m in args.modes.split(",") if m]
    forwarded = sys.argv[1:]
    results = []
    print(f"load average before: {os.getloadavg()}", flush=True)
    for kind, name in jobs:
        proc = subprocess.run(
            [sys.executable, __file__, *forwarded, "--child", kind, name],
            capture_output=True,
            text=True,
            env=os.environ | {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{kind} {name} failed:\n{proc.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(lines[-1][len("RESULT ") :]) | {"load_average_after": os.getloadavg()}
        results.append(result)
        if kind == "train":
            print(
                f"train {name}: {result['median_s_per_step_after_first']:.1f} s/step, "
                f"CPU {result['median_cpu_s_per_step_after_first']:.1f} s/step (batch {args.batch}, "
                f"cutoff {args.cutoff}; steps {', '.join(f'{t:.1f}' for t in result['step_s'])}; "
                f"{result['before_first_step_s']:.0f} s before the first, "
                f"{result['after_last_step_s']:.0f} s after the last), "
                f"peak RSS {result['peak_rss_gb']:.2f} GB",
                flush=True,
            )
        else:
            print(
                f"eval {name}: {result['s_per_item']:.2f} s/item, CPU {result['cpu_s_per_item']:.2f} s/item, "
                f"over {result['items']} items "
                f"({result['seconds']:.0f} s), peak RSS {result['peak_rss_gb']:.2f} GB",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if len(results) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
