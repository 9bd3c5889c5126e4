"""Whole-run time that backprop truncation saved an AROMA run, from the finish events in its log.

Once every adapted module of the lowest k blocks has finished, autograd builds no graph for them and
the backward stops above them. The run's ``log.jsonl`` says when each module finished, so it gives the
number k(s) of truncated blocks at every step s; a step with k truncated blocks saves
``full(k) - truncated(k)``: the step cost of AROMA with those k blocks finished when backprop still runs
through every block (an input that requires grad below the lowest block, as the frozen floor has) minus
its cost with truncation. Both are measured here on the run's model, task and batch shape (``aroma
bench``'s AROMA runner, interleaved steps), or read back from ``--costs``:

    python benchmarks/truncation_savings.py RUN_DIR --threads 2 --steps 5 --output costs.json
    python benchmarks/truncation_savings.py RUN_DIR --costs costs.json

The run folder is only read. The estimate takes k(s) from the run and the per-step saving from a
model with exactly the k lowest blocks finished (modules finished higher up change both costs alike).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from aroma_peft.bench import BenchConfig, bench_task, block_index, build, make_batches


def truncated_blocks(log: Path) -> tuple[list[int], int]:
    """k(s) for s = 1..steps (``result[s - 1]``): the lowest blocks whose modules had all finished before
    step s (a module finishes after its step's optimizer update); and the number of blocks."""
    modules: list[str] = []
    finished: dict[str, int] = {}
    steps = 0
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") != "train":
            continue
        steps = max(steps, record["step"])
        modules = modules or list(record.get("ranks", {}))
        for event in record.get("events", []):
            if event["event"] == "finish":
                finished.setdefault(event["module"], event["step"])
    if not modules:
        raise SystemExit(f"{log}: no training record with the modules' ranks (not an AROMA run?)")
    by_block: dict[int, list[str]] = {}
    for name in modules:
        by_block.setdefault(block_index(name), []).append(name)
    blocks = sorted(b for b in by_block if b is not None)
    # The step after which block b and every block below it had finished (never: steps).
    done_after, latest = [], 0
    for b in blocks:
        latest = max(latest, *(finished.get(name, steps) for name in by_block[b]))
        done_after.append(latest)
    return [sum(after < s for after in done_after) for s in range(1, steps + 1)], len(blocks)


def measure(config: BenchConfig, ks: list[int], steps: int) -> dict[int, dict[str, float]]:
    """Median seconds per step of AROMA with the k lowest blocks finished, truncated and with full
    backprop; k = 0 (nothing finished) gives the run's ordinary step."""
    costs = {}
    for k in ks:
        torch.manual_seed(config.seed)
        runner = build("aroma", config, finished_blocks=k)
        batches = make_batches(config, runner.vocab_size, bench_task(config))
        embed = runner.model.get_input_embeddings()
        with torch.no_grad():
            full = [
                {n: v for n, v in b.items() if n != "input_ids"} | {"inputs_embeds": embed(b["input_ids"])}
                for b in batches
            ]
        for b in full:  # a leaf that requires grad below the lowest block: backward runs through all
            b["inputs_embeds"].requires_grad_()
        times: dict[str, list[float]] = {"truncated": [], "full": []}
        modes = {"truncated": batches, "full": full} if k else {"truncated": batches}
        for data in modes.values():
            runner.step(data[0])  # warmup
        for i in range(steps):
            for mode, data in modes.items():
                start = time.perf_counter()
                runner.step(data[i % len(data)])
                times[mode].append(time.perf_counter() - start)
        costs[k] = {mode: statistics.median(t) for mode, t in times.items() if t}
        costs[k].setdefault("full", costs[k]["truncated"])
        print(f"k={k}: " + ", ".join(f"{mode} {v:.3f} s/step" for mode, v in costs[k].items()), flush=True)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--costs", type=Path, help="per-k step costs written by an earlier --output")
    parser.add_argument("--output", type=Path, help="write the measured per-k costs here (JSON)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per k and mode")
    parser.add_argument("--batch-size", type=int, help="default: the run's")
    parser.add_argument("--seq-len", type=int, help="default: the run's max_seq_len")
    args = parser.parse_args()
    ks, blocks = truncated_blocks(args.run_dir / "log.jsonl")
    counts = Counter(ks)
    if args.costs:
        costs = {int(k): v for k, v in json.loads(args.costs.read_text()).items()}
    else:
        run = json.loads((args.run_dir / "config.json").read_text())
        torch.set_num_threads(args.threads)
        config = BenchConfig(
            model=run.get("model"), task=run["task"], methods=["aroma"], output_dir=tempfile.mkdtemp(),
            batch_size=args.batch_size or run["batch_size"], seq_len=args.seq_len or run["max_seq_len"],
            warmup=1, rounds=1, steps=args.steps + 2,
        )  # fmt: skip
        costs = measure(config, sorted(set(ks) | {0}), args.steps)
        if args.output:
            args.output.write_text(json.dumps(costs, indent=2) + "\n")
    missing = sorted(set(ks) - set(costs))
    if missing:
        raise SystemExit(f"--costs has no cost for k = {missing}")
    without = sum(costs[k]["full"] * n for k, n in counts.items())
    saved = sum((costs[k]["full"] - costs[k]["truncated"]) * n for k, n in counts.items())
    print(f"{args.run_dir}: {len(ks)} steps, {blocks} blocks")
    print("| truncated blocks k | steps | s/step, full backprop | s/step, truncated | saved per step |")
    print("|---|---|---|---|---|")
    for k in sorted(counts):
        full, truncated = costs[k]["full"], costs[k]["truncated"]
        print(f"| {k} | {counts[k]:,} | {full:.3f} | {truncated:.3f} | {full - truncated:.3f} |")
    print(
        f"Saved by truncation: {saved:,.1f} s of {without:,.1f} s estimated without it "
        f"({100 * saved / without:.2f}% of the run's training steps)."
    )


if __name__ == "__main__":
    main()
