"""Where a step's CPU time goes: torch.profiler self-CPU time per operator, methods side by side.

    python benchmarks/speed/profile_step.py --methods frozen,aroma,aroma_late,forward \
        --batch-size 8 --seq-len 128 --threads 1 --repeats 4

Methods are built as ``aroma bench`` builds them (freed memory kept, as there) and profiled one step at
a time in turn, ``--repeats`` times; the table sums the repeats (milliseconds).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from aroma_peft.allocator import keep_freed_memory
from aroma_peft.bench import BenchConfig, runners_and_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="frozen,aroma,aroma_late,forward")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    config = BenchConfig(
        task=args.task, methods=methods, batch_size=args.batch_size, seq_len=args.seq_len,
        output_dir=tempfile.mkdtemp(), warmup=1, rounds=1, steps=args.repeats,
    )  # fmt: skip
    runners, batches = runners_and_batches(config)
    for runner in runners.values():
        runner.step(batches[0])
    totals = {name: Counter() for name in methods}
    for i in range(args.repeats):
        for name, runner in runners.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.step(batches[i % len(batches)])
            for event in prof.key_averages():
                totals[name][event.key] += event.self_cpu_time_total / 1e3
    keys = sorted(set().union(*totals.values()), key=lambda k: -max(t[k] for t in totals.values()))
    print(
        f"self CPU ms over {args.repeats} steps, batch {args.batch_size} x {args.seq_len}, "
        f"{args.threads} thread(s)"
    )
    print("| operator | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    print("| **total** | " + " | ".join(f"{sum(totals[m].values()):.0f}" for m in methods) + " |")
    for key in keys[: args.rows]:
        print(f"| {key[:60]} | " + " | ".join(f"{totals[m][key]:.1f}" for m in methods) + " |")


if __name__ == "__main__":
    main()
