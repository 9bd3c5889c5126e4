"""``aroma bench``: a thin front end to :func:`aroma_peft.bench.run` (flags from BenchConfig's fields)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Any


def add_parser(commands: Any) -> None:
    from ..bench import BenchConfig

    parser = commands.add_parser(
        "bench",
        help="time an optimizer step of every method",
        description="Seconds per optimizer step (forward, backward, AdamW, the method's controller) of each "
        "method as `aroma train` builds it, interleaved in one process, against two floors: the frozen base "
        "with gradients through every layer, and the forward pass alone. Writes bench.json and bench.md.",
    )
    for f in dataclasses.fields(BenchConfig):
        if "help" not in f.metadata:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "int | None": int}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, metavar=f.name.upper(), help=f.metadata["help"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..bench import BenchConfig
    from ..bench import run as run_bench

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(BenchConfig)
        if getattr(args, f.name, None) is not None and getattr(args, f.name) is not False
    }
    flags = [(f"--{k.replace('_', '-')}", "" if v is True else str(v)) for k, v in given.items()]
    command = "aroma bench " + " ".join(f"{flag} {shlex.quote(v)}" if v else flag for flag, v in flags)
    if "methods" in given:
        given["methods"] = [m.strip() for m in given["methods"].split(",") if m.strip()]
    run_bench(BenchConfig(**given), command=command)
