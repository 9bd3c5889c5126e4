"""Minor page faults and seconds per optimizer step of each method, with glibc's default allocator
thresholds or with freed memory kept in the process (``aroma_peft.allocator``; ``--keep-freed-memory``).

The setting is process-wide and cannot be undone, so each mode is its own run:

    python benchmarks/speed/page_faults.py --methods frozen,aroma --batch-size 8 --seq-len 128 --threads 1
    python benchmarks/speed/page_faults.py --methods frozen,aroma --batch-size 8 --seq-len 128 --threads 1 \
        --keep-freed-memory

Methods are built as ``aroma bench`` builds them and stepped in turn (one step each per repeat).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch

from aroma_peft.allocator import keep_freed_memory
from aroma_peft.bench import BenchConfig, runners_and_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="frozen,aroma,aroma_late")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-freed-memory", action="store_true")
    args = parser.parse_args()
    kept = keep_freed_memory() if args.keep_freed_memory else False
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    config = BenchConfig(
        task=args.task, methods=methods, batch_size=args.batch_size, seq_len=args.seq_len,
        output_dir=tempfile.mkdtemp(), warmup=2, rounds=1, steps=args.repeats,
    )  # fmt: skip
    runners, batches = runners_and_batches(config)
    for runner in runners.values():
        for batch in batches[: config.warmup]:
            runner.step(batch)
    faults: dict[str, list[int]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    wall: dict[str, list[float]] = {name: [] for name in methods}
    for i in range(args.repeats):
        for name, runner in runners.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start, cpu_start = time.perf_counter(), time.process_time()
            runner.step(batches[i % len(batches)])
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(f"freed memory kept: {kept}; batch {args.batch_size} x {args.seq_len}, {args.threads} thread(s)")
    print("| method | minor faults per step (median) | median s/step | median CPU s/step |")
    print("|---|---|---|---|")
    for name in methods:
        print(
            f"| {name} | {statistics.median(faults[name]):,.0f} | {statistics.median(wall[name]):.3f} |"
            f" {statistics.median(cpu[name]):.3f} |"
        )


if __name__ == "__main__":
    main()
