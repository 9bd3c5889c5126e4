"""``aroma merge``: a finished run as a plain transformers model, for serving without adapters."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "merge",
        help="save a run as a plain transformers model (update merged)",
        description="Merge a finished run's learned update into its base model and save the result with "
        "save_pretrained (model and tokenizer): AutoModelForSequenceClassification (GLUE) or "
        "AutoModelForCausalLM (commonsense) loads it. BitFit and bottleneck-adapter runs have no update "
        "to merge.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="output folder of `aroma train`")
    parser.add_argument("--output-dir", required=True, help="new (or empty) folder for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace a model saved there before")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..serving import merge_run

    print(merge_run(args.run_dir, args.output_dir, args.overwrite))
