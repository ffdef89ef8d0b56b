"""``dicomnode check-config FILE``: validate a YAML config and its model bundles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dicomnode.config import Config, load_config

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("check-config", help="validate a YAML config and its model bundles")
    parser.add_argument("file", type=Path)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dicomnode.node import check_routes  # noqa: PLC0415

    config = load_config(args.file)
    problems = {k: v for k, v in check_routes(config).items() if v}
    for route, problem in problems.items():
        print(f"route '{route}': {problem}", file=sys.stderr)
    print(json.dumps(config.summary(), indent=1))
    if config.executor.celery and (unreachable := _unreachable(config)):
        for problem in unreachable:
            print(problem, file=sys.stderr)
        print("config valid, but the scale-out broker or database cannot be reached")
        return 2
    print("config OK" if not problems else f"config valid, but {len(problems)} route(s) unusable")
    return 0 if not problems else 1


def _unreachable(config: Config) -> list[str]:
    """Scale-out: the broker and the database answer? (URLs named without their passwords)."""
    from dicomnode.errors import SpoolError  # noqa: PLC0415
    from dicomnode.jobstore_pg import PostgresJobStore  # noqa: PLC0415 - psycopg, celery only when used
    from dicomnode.scaleout.broker import Broker  # noqa: PLC0415
    from dicomnode.spool import Spool  # noqa: PLC0415

    found = [p for p in [Broker(config).ping()] if p]
    try:
        PostgresJobStore(Spool(config.spool.path, shared=True), config.executor.database_url).close()
    except SpoolError as exc:
        found.append(str(exc))
    return found
