"""``aroma train``: flags generated from TrainConfig and every recipe's Options (no copies to sync)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..train.config import TrainConfig, field_types, read_config_file, resume_settings, split_options

GIVEN = argparse.SUPPRESS  # only flags the user gives reach the config (file values stay otherwise)


def add_parser(commands: Any) -> None:
    from ..train import RECIPES

    parser = commands.add_parser(
        "train",
        help="fine-tune on a GLUE task",
        description="Fine-tune a pretrained encoder on a GLUE task with AROMA or a baseline. Settings come "
        "from --config FILE (YAML or JSON, the same keys as the flags) and the flags, which override it.",
    )
    parser.add_argument("--config", help="YAML or JSON file of settings (keys as the flags, '_' for '-')")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its latest checkpoint, with its saved settings",
    )
    add_fields(parser.add_argument_group("common settings"), TrainConfig)
    seen: set[str] = set()
    for name, recipe in RECIPES.items():
        if dataclasses.fields(recipe.Options):
            group = parser.add_argument_group(f"{name} options (defaults: {defaults(recipe.Options)})")
            seen |= add_fields(group, recipe.Options, skip=seen)
    parser.set_defaults(run=run)


def add_fields(group: argparse._ArgumentGroup, cls: type, skip: set[str] = frozenset()) -> set[str]:
    """One flag per dataclass field; a field several methods share (e.g. r) gets one flag."""
    added = set()
    for f, hint in zip(dataclasses.fields(cls), field_types(cls).values()):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=GIVEN, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=GIVEN, metavar=f.name.upper(), help=help_text)
        added.add(f.name)
    return added


def defaults(cls: type) -> str:
    return ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls))


def run(args: argparse.Namespace) -> None:
    from ..train import RECIPES, get_recipe, train

    values = read_config_file(args.config) if args.config else {}
    values |= {
        k: v for k, v in vars(args).items() if k not in ("config", "overwrite", "resume", "run", "command")
    }
    if args.resume:
        values = resume_settings(values, overwrite=args.overwrite)
    recipe = get_recipe(str(values.get("method") or "")) if values.get("method") else None
    if recipe is None:
        from ..errors import UserInputError

        raise UserInputError(f"--method is required: one of {', '.join(RECIPES)}")
    others = {name: r.Options for name, r in RECIPES.items()}
    config, options = split_options(values, recipe.Options, recipe.name, others)
    result = train(config, options, overwrite=args.overwrite, resume=args.resume)
    if result.get("diverged"):
        print(
            f"aroma train: error: {result['diverged']} (no adapter saved; the last checkpoint is kept)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(3)
