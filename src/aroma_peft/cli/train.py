"""``aroma train``: flags generated from TrainConfig and every recipe's Options (no copies to sync)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..train.config import TrainConfig, field_types, read_config_file
from ..train.recipe import resume_settings

GIVEN = argparse.SUPPRESS  # only flags the user gives reach the config (file values stay otherwise)


def add_parser(commands: Any) -> None:
    from ..train import RECIPES

    parser = commands.add_parser(
        "train",
        help="fine-tune on a GLUE task or on commonsense (a causal LM)",
        description="Fine-tune a pretrained encoder on a GLUE task, or a causal LM on the commonsense sets "
        "(--task commonsense), with AROMA or a baseline. Settings come "
        "from --config FILE (YAML or JSON, the same keys as the flags) and the flags, which override it.",
    )
    parser.add_argument("--config", help="YAML or JSON file of settings (keys as the flags, '_' for '-')")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run in --output-dir")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir from its latest checkpoint, with its saved settings",
    )
    registered: set[str] = set()
    common = parser.add_argument_group("common settings")
    add_fields(common, TrainConfig, registered)
    method = next(a for a in common._group_actions if a.dest == "method")
    method.help = f"One of {', '.join(RECIPES)}; each method's options and default lr are below. (required)"
    for name, recipe in RECIPES.items():
        title = f"{name} options (default lr {recipe.default_lr:g})"
        has_options = bool(dataclasses.fields(recipe.Options))
        group = parser.add_argument_group(title, None if has_options else "No options of its own.")
        add_fields(group, recipe.Options, registered)
    parser.set_defaults(run=run)


def add_fields(group: argparse._ArgumentGroup, cls: type, registered: set[str]) -> None:
    """One flag per dataclass field, with its default. A field several methods share (e.g. r) is parsed
    by one flag, listed in each method's group with that method's help and default."""
    for f, hint in zip(dataclasses.fields(cls), field_types(cls).values()):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": GIVEN, "help": with_default(f)}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs |= {"dest": f.name, "metavar": f.name.upper()}
        if f.name not in registered:
            group.add_argument(flag, **kwargs)
            registered.add(f.name)
        else:  # listed in this group's help only: argparse parses one flag once
            nargs = 0 if hint is bool else None
            shown = argparse.Action([flag], f.name, nargs, help=kwargs["help"], metavar=kwargs.get("metavar"))
            group._group_actions.append(shown)


def with_default(f: dataclasses.Field) -> str:
    """The field's help and its default (unless the help already says what None means)."""
    text = f.metadata.get("help", "")
    if f.default in ("", None) and "default:" in text:
        return text
    default = "required" if f.default == "" else f"default: {f.default}"
    return f"{text} ({default})"


def run(args: argparse.Namespace) -> None:
    from ..allocator import keep_freed_memory
    from ..train import RECIPES, run_settings, train

    keep_freed_memory()  # no page faults re-mapping each step's activations (allocator.py)
    values = read_config_file(args.config) if args.config else {}
    values |= {
        k: v for k, v in vars(args).items() if k not in ("config", "overwrite", "resume", "run", "command")
    }
    if args.resume:
        values = resume_settings(values, overwrite=args.overwrite)
    if not values.get("method"):
        from ..errors import UserInputError

        raise UserInputError(f"--method is required: one of {', '.join(RECIPES)}")
    config, options = run_settings(values)
    result = train(config, options, overwrite=args.overwrite, resume=args.resume)
    if result.get("diverged"):
        print(
            f"aroma train: error: {result['diverged']} (no adapter saved; the last checkpoint is kept)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(3)
