"""Command line: ``dicomnode serve | echo | replay | rules test | jobs | check-config``.

One module per subcommand, each with ``add_parser(subparsers)`` (its arguments, and
``func``: the thin function that parses → loads the config → calls the module that does
the work). :func:`main` is the console script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

from dicomnode.cli import check_config, echo, evaluate, jobs, replay, rules, serve
from dicomnode.errors import DicomNodeError

__all__ = ["main"]

#: The subcommand modules, in the order ``dicomnode --help`` lists them.
COMMANDS = (serve, echo, check_config, rules, jobs, replay, evaluate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description="DICOM inference node for "
                                     "lymph-node metastasis (demo models: NOT FOR CLINICAL USE)")
    parser.add_argument("--version", action="version", version=f"dicomnode {version('dicomnode')}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicomnode`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DicomNodeError as exc:
        print(f"dicomnode: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
