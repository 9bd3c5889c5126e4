"""CPU seconds of a frozen-floor step for several models and shapes, interleaved: how to pick a batch
shape for ``aroma bench`` from one quiet-machine measurement of another.

    python benchmarks/speed/floor_by_shape.py sst2:32x128 commonsense:2x128 commonsense:4x64 commonsense:2x64

Each argument is TASK:BATCHxLENGTH (the task's default model); ratios are to the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from aroma_peft.allocator import keep_freed_memory
from aroma_peft.bench import BenchConfig, bench_task, build, make_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", nargs="+", help="TASK:BATCHxLENGTH")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    runs = {}
    for shape in args.shapes:
        task, _, size = shape.partition(":")
        batch, _, length = size.partition("x")
        config = BenchConfig(
            task=task, batch_size=int(batch), seq_len=int(length), methods=["frozen"],
            output_dir=tempfile.mkdtemp(), warmup=1, rounds=1, steps=args.repeats,
        )  # fmt: skip
        runner = build("frozen", config)
        batches = make_batches(config, runner.vocab_size, bench_task(config))
        runner.step(batches[0])  # warmup
        runs[shape] = (runner, batches)
    times: dict[str, list[float]] = {shape: [] for shape in runs}
    for i in range(args.repeats):
        for shape, (runner, batches) in runs.items():
            start = time.process_time()
            runner.step(batches[i % len(batches)])
            times[shape].append(time.process_time() - start)
    first = statistics.median(times[args.shapes[0]])
    print(f"| shape | frozen-floor CPU s/step ({args.threads} thread(s)) | vs {args.shapes[0]} |")
    print("|---|---|---|")
    for shape, t in times.items():
        print(f"| {shape} | {statistics.median(t):.2f} | {statistics.median(t) / first:.3f}x |")


if __name__ == "__main__":
    main()
