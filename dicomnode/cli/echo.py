"""``dicomnode echo HOST:PORT``: C-ECHO a DICOM node."""

from __future__ import annotations

import argparse
import time
from typing import Any

from dicomnode.cli.common import hostport

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("echo", help="C-ECHO a DICOM node")
    parser.add_argument("target", type=hostport, metavar="HOST:PORT")
    parser.add_argument("--called-aet", default="DICOMNODE")
    parser.add_argument("--calling-aet", default="ECHOSCU")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomnode.net.scu import echo  # noqa: PLC0415

    host, port = args.target
    started = time.monotonic()
    code = echo(host, port, called=args.called_aet, calling=args.calling_aet)
    ms = (time.monotonic() - started) * 1000
    print(f"C-ECHO {args.called_aet}@{host}:{port}: status 0x{code:04X} in {ms:.0f} ms")
    return 0 if code == 0 else 1
