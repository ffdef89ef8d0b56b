"""``dicomnode serve``: run the node in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicomnode.cli.common import load
from dicomnode.log import configure_logging

__all__ = ["ROLES", "add_parser", "run"]

#: ``serve --role`` choices.
ROLES = ("all", "receiver", "worker", "dispatcher")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the node in the foreground")
    parser.add_argument("--config", type=Path, help="YAML config (default: embedded demo config)")
    parser.add_argument("--port", type=int, help="override node.port")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish jobs on stop")
    parser.add_argument("--role", choices=ROLES, default="all",
                        help="scale-out (executor.kind: celery) only: run the DICOM receiver, a worker, the "
                             "dispatcher, or all three (default); see docs/scale-out.md")
    parser.add_argument("--queues", help="worker role: comma-separated queues to take jobs from (default: all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    configure_logging(config.log.format, config.log.level)
    if config.executor.celery:
        from dicomnode.cli.scale import serve_role  # noqa: PLC0415 - celery only when used
        return serve_role(config, args)
    if args.role != "all":
        print(f"dicomnode: --role {args.role} needs executor.kind: celery (this config runs embedded: one "
              "process does everything)", file=sys.stderr)
        return 2
    from dicomnode.node import Node  # noqa: PLC0415 - heavy imports only for serve

    node = Node(config)
    try:
        node.start()
    except OSError as exc:  # e.g. a port already in use: stop what did start, then exit
        node.shutdown(0)
        print(f"dicomnode: cannot start: {exc}", file=sys.stderr)
        return 2
    print(f"dicomnode listening as {config.node.ae_title} on {config.node.host}:{node.port}"
          f" (Ctrl-C to stop)", file=sys.stderr, flush=True)
    node.serve(args.drain_timeout)
    return 0
