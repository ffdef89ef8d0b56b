"""``dicomnode rules test FILES…``: which route each file matches, and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dicomnode.cli.common import load

__all__ = ["add_parser", "run_test"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("rules", help="routing rule tools")
    rules_sub = parser.add_subparsers(dest="rules_command", required=True)
    test = rules_sub.add_parser("test", help="show which route each file matches and why")
    test.add_argument("files", nargs="+")
    test.add_argument("--config", type=Path)
    test.set_defaults(func=run_test)


def run_test(args: argparse.Namespace) -> int:
    from dicomnode.dicom.headers import read_info  # noqa: PLC0415
    from dicomnode.routing import first_match  # noqa: PLC0415

    config = load(args)
    for path in args.files:
        _, headers = read_info(Path(path))
        route, trace = first_match(config.routes, headers)
        print(f"{path}: {'→ ' + route.name + ' (' + route.pipeline + ')' if route else 'no route matched'}")
        for name, ok, reason in trace:
            print(f"  {'MATCH' if ok else 'no   '} {name}: {reason}")
        for skipped in config.routes[len(trace):]:
            print(f"  -     {skipped.name}: not tried (an earlier rule matched)")
    return 0
