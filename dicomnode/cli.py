"""Command line: ``dicomnode serve | echo | replay | rules test | jobs | check-config``.

Each command is a thin function: parse → load config → call the module that does the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dicomnode.config import Config, load_config
from dicomnode.errors import DicomNodeError
from dicomnode.log import configure_logging

__all__ = ["main"]

log = logging.getLogger("dicomnode")


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _config(args: argparse.Namespace) -> Config:
    overrides = {}
    if getattr(args, "port", None) is not None:
        overrides["node.port"] = args.port
    return load_config(args.config, overrides=overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_logging(config.log.format, config.log.level)
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


def cmd_echo(args: argparse.Namespace) -> int:
    from dicomnode.net.scu import echo  # noqa: PLC0415

    host, port = args.target
    started = time.monotonic()
    code = echo(host, port, called=args.called_aet, calling=args.calling_aet)
    ms = (time.monotonic() - started) * 1000
    print(f"C-ECHO {args.called_aet}@{host}:{port}: status 0x{code:04X} in {ms:.0f} ms")
    return 0 if code == 0 else 1


def cmd_check_config(args: argparse.Namespace) -> int:
    from dicomnode.node import check_routes  # noqa: PLC0415

    config = load_config(args.file)
    problems = {k: v for k, v in check_routes(config).items() if v}
    for route, problem in problems.items():
        print(f"route '{route}': {problem}", file=sys.stderr)
    print(json.dumps(config.summary(), indent=1))
    print("config OK" if not problems else f"config valid, but {len(problems)} route(s) unusable")
    return 0 if not problems else 1


def cmd_rules_test(args: argparse.Namespace) -> int:
    from dicomnode.dicom.headers import read_info  # noqa: PLC0415
    from dicomnode.routing import first_match  # noqa: PLC0415

    config = _config(args)
    for path in args.files:
        _, headers = read_info(Path(path))
        route, trace = first_match(config.routes, headers)
        print(f"{path}: {'→ ' + route.name + ' (' + route.pipeline + ')' if route else 'no route matched'}")
        for name, ok, reason in trace:
            print(f"  {'MATCH' if ok else 'no   '} {name}: {reason}")
        for skipped in config.routes[len(trace):]:
            print(f"  -     {skipped.name}: not tried (an earlier rule matched)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from dicomnode.jobs_cli import jobs_command  # noqa: PLC0415

    return jobs_command(_config(args), args)


def cmd_replay(args: argparse.Namespace) -> int:
    from dicomnode.replay import replay_command  # noqa: PLC0415

    return replay_command(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description="DICOM inference node for "
                                     "lymph-node metastasis (demo models: NOT FOR CLINICAL USE)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node in the foreground")
    serve.add_argument("--config", type=Path, help="YAML config (default: embedded demo config)")
    serve.add_argument("--port", type=int, help="override node.port")
    serve.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish jobs on stop")
    serve.set_defaults(func=cmd_serve)
    echo = sub.add_parser("echo", help="C-ECHO a DICOM node")
    echo.add_argument("target", type=_hostport, metavar="HOST:PORT")
    echo.add_argument("--called-aet", default="DICOMNODE")
    echo.add_argument("--calling-aet", default="ECHOSCU")
    echo.set_defaults(func=cmd_echo)
    check = sub.add_parser("check-config", help="validate a YAML config and its model bundles")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)
    rules = sub.add_parser("rules", help="routing rule tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rtest = rules_sub.add_parser("test", help="show which route each file matches and why")
    rtest.add_argument("files", nargs="+")
    rtest.add_argument("--config", type=Path)
    rtest.set_defaults(func=cmd_rules_test)
    jobs = sub.add_parser("jobs", help="list jobs, show one, or re-send a failed delivery")
    jobs.add_argument("action", nargs="?", default="list", choices=("list", "show", "retry"))
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--config", type=Path)
    jobs.add_argument("--state", help="only jobs in this state")
    jobs.set_defaults(func=cmd_jobs)
    from dicomnode.replay import add_replay_arguments  # noqa: PLC0415

    add_replay_arguments(sub.add_parser("replay", help="send files/folders to a node over C-STORE"))
    sub.choices["replay"].set_defaults(func=cmd_replay)
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
