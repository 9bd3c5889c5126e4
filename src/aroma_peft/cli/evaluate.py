"""``aroma evaluate``: accuracy of a trained run or a bare causal LM, written to metrics.json."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    from ..tasks.commonsense_eval import MODES

    parser = commands.add_parser(
        "evaluate",
        help="evaluate a run or a causal LM on test sets",
        description="Evaluate a trained run (base model + adapter, or its full model) or a bare causal LM. "
        "Commonsense: accuracy on every <set>/test.json under --data-dir (keyed by folder name) and the "
        "average. GLUE runs: their task's dev metrics.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", dest="run_dir", metavar="RUN_DIR", help="output folder of `aroma train`")
    source.add_argument("--model", metavar="M", help="causal LM folder or hub name ('default': SmolLM2)")
    parser.add_argument("--task", help="commonsense (default: the run's task)")
    parser.add_argument("--data-dir", help="commonsense: folder of <set>/test.json; GLUE: as for train")
    parser.add_argument("--eval-sets", help="comma-separated set names (default: every set found)")
    parser.add_argument("--eval-limit", type=int, metavar="N", help="first N items of each set")
    parser.add_argument(
        "--eval-mode", choices=MODES, default="loglik", help="label log-likelihood or decoding"
    )
    parser.add_argument("--num-beams", type=int, default=1, help="generate: beams (1 = greedy)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output-dir", required=True, help="folder for metrics.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..errors import UserInputError
    from ..evaluation import evaluate, format_table

    if args.eval_limit is not None and args.eval_limit < 1:
        raise UserInputError(f"--eval-limit {args.eval_limit}: use a positive number of items")
    result = evaluate(
        args.output_dir,
        task=args.task,
        run=args.run_dir,
        model=args.model,
        data_dir=args.data_dir,
        eval_sets=[s.strip() for s in args.eval_sets.split(",")] if args.eval_sets else None,
        eval_limit=args.eval_limit,
        eval_mode=args.eval_mode,
        num_beams=args.num_beams,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(format_table(result))
