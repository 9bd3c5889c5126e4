"""``aroma report``: figures and a Markdown table comparing finished runs."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="figures and a table comparing runs",
        description="Paper-style figures (Fig. 1: trainable parameters, total rank, module ranks and dev "
        "metric against step; Fig. 3: rank and effective rank of every learned dW) and a Markdown table.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output folders of `aroma train`")
    parser.add_argument("--out", required=True, help="folder for the PNG figures and table.md")
    parser.add_argument(
        "--modules",
        default=None,
        help="comma-separated module names for the rank panel (default: 3 spread over depth)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..report import write_report

    modules = [m.strip() for m in args.modules.split(",")] if args.modules else None
    for path in write_report(args.runs, args.out, modules):
        print(path)
