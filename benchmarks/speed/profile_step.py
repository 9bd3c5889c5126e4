"""Where a step's CPU time goes: torch.profiler self-CPU time per operator, methods side by side.

    python benchmarks/speed/profile_step.py --methods frozen,aroma,aroma_late,forward \
        --batch-size 8 --seq-len 128 --threads 1 --repeats 4

Methods are built as ``aroma bench`` builds them (freed memory kept, as there) and profiled one step at
a time in turn, ``--repeats`` times; the table sums the repeats (milliseconds).
"""

from __future__ import annotations

from collections import Counter

from step_runners import step_parser, warmed_runners
from torch.profiler import ProfilerActivity, profile

from aroma_peft.allocator import keep_freed_memory


def main() -> None:
    parser = step_parser(__doc__, methods="frozen,aroma,aroma_late,forward", repeats=4)
    parser.add_argument("--rows", type=int, default=30, help="operators to list")
    args = parser.parse_args()
    keep_freed_memory()
    runners, batches = warmed_runners(args, warmup=1)
    methods = list(runners)
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
