"""The ``aroma`` command (train, report, merge, export, bench, prepare-model, evaluate): thin layers
over library functions."""

from __future__ import annotations

import argparse
import logging as py_logging
import os
import re
import sys
import warnings

from ..errors import UserInputError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), exit status 2."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        # argparse takes "-1e-3" for a flag ("expected one argument"): any number is a value.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$", re.IGNORECASE)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import bench, evaluate, export, merge, prepare, report, train

    parser = Parser(prog="aroma", description="Adaptive-rank fine-tuning of transformers models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_parser(commands)
    report.add_parser(commands)
    merge.add_parser(commands)
    export.add_parser(commands)
    bench.add_parser(commands)
    prepare.add_parser(commands)
    evaluate.add_parser(commands)
    return parser


def quiet_libraries() -> None:
    """Quiet by default: no FutureWarnings, notices or progress bars ("Loading weights", "Writing model
    shards") from transformers and the hub client; our own progress bar and result lines stay. The
    environment variables TRANSFORMERS_VERBOSITY and HF_HUB_DISABLE_PROGRESS_BARS still win."""
    from transformers.utils import logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    # torchao (the quant extra), which transformers imports whenever it is installed, logs at import a
    # notice per GPU kernel library it cannot load here and per Enum it registers with torch's pytree.
    for name in ("torchao", "torch.utils._pytree"):
        py_logging.getLogger(name).setLevel(py_logging.ERROR)
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        logging.set_verbosity_error()
    if "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:
        logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        args.run(args)
    except UserInputError as err:
        print(f"aroma {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aroma {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
