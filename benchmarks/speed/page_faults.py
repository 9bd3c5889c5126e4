"""Minor page faults and seconds per optimizer step of each method, with glibc's default allocator
thresholds or with freed memory kept in the process (``aroma_peft.allocator``; ``--keep-freed-memory``).

The setting is process-wide and cannot be undone, so each mode is its own run:

    python benchmarks/speed/page_faults.py --methods frozen,aroma --batch-size 8 --seq-len 128 --threads 1
    python benchmarks/speed/page_faults.py --methods frozen,aroma --batch-size 8 --seq-len 128 --threads 1 \
        --keep-freed-memory

Methods are built as ``aroma bench`` builds them and stepped in turn (one step each per repeat).
"""

from __future__ import annotations

import resource
import statistics
import time

from step_runners import step_parser, warmed_runners

from aroma_peft.allocator import keep_freed_memory


def main() -> None:
    parser = step_parser(__doc__, methods="frozen,aroma,aroma_late", repeats=5)
    parser.add_argument("--keep-freed-memory", action="store_true")
    args = parser.parse_args()
    kept = keep_freed_memory() if args.keep_freed_memory else False
    runners, batches = warmed_runners(args, warmup=2)
    methods = list(runners)
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
