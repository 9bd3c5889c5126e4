"""``aroma export``: a finished run's update as a standard PEFT LoRA adapter, for LoRA servers."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    from ..serving import EXPORT_FORMATS

    parser = commands.add_parser(
        "export",
        help="write a run's update as a PEFT LoRA adapter (uniform rank for vLLM)",
        description="Export an AROMA, ReLoRA or SoRA run as a PEFT LoRA adapter. 'uniform' (default): one "
        "rank and lora_alpha == r for every module, each module's scale folded into B, which servers that "
        "ignore rank_pattern / alpha_pattern (vLLM) apply as peft does; refused for runs with a trained "
        "head (modules_to_save, e.g. GLUE classifiers). 'patterns': each module's own rank and scale.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `aroma train`")
    parser.add_argument("--output-dir", required=True, help="new (or empty) folder for the adapter")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="uniform", help="see above")
    parser.add_argument(
        "--rank", type=int, help="pad every module to this rank (uniform; e.g. a server's --max-lora-rank)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter exported there before")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..serving import export_run

    out, rank = export_run(args.run_dir, args.output_dir, args.format, args.rank, args.overwrite)
    print(f"{out}" + (f" (rank {rank} for every module, lora_alpha {rank})" if rank is not None else ""))
