"""What the step-level speed scripts share: their common options and the warmed-up runners of
``aroma bench`` (each method built from the same seed, on the same batches)."""

from __future__ import annotations

import argparse
import tempfile

import torch

from aroma_peft.bench import BenchConfig, runners_and_batches


def step_parser(doc: str, methods: str, repeats: int) -> argparse.ArgumentParser:
    """Options for timing single steps of several methods, interleaved, on one task and batch shape."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--methods", default=methods, help="comma-separated `aroma bench` methods")
    parser.add_argument("--task", default="sst2", help="the task (and its default model)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=repeats, help="measured steps per method")
    return parser


def warmed_runners(args: argparse.Namespace, warmup: int) -> tuple[dict, list]:
    """The methods' runners after ``warmup`` steps each, and the batches to step them with."""
    torch.set_num_threads(args.threads)
    config = BenchConfig(
        task=args.task, methods=args.methods.split(","), batch_size=args.batch_size,
        seq_len=args.seq_len, output_dir=tempfile.mkdtemp(), warmup=warmup, rounds=1,
        steps=args.repeats,
    )  # fmt: skip
    runners, batches = runners_and_batches(config)
    for runner in runners.values():
        for batch in batches[:warmup]:
            runner.step(batch)
    return runners, batches
