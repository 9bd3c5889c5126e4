"""The ``aroma`` command: ``aroma train`` and ``aroma report``, thin layers over library functions."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserInputError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import evaluate, prepare, report, train

    parser = Parser(prog="aroma", description="Adaptive-rank fine-tuning of transformers models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_parser(commands)
    report.add_parser(commands)
    prepare.add_parser(commands)
    evaluate.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
