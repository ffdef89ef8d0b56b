"""``dicomnode serve --role …`` in the scale-out mode (``executor.kind: celery``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from dicomnode.config import Config
from dicomnode.errors import DicomNodeError

__all__ = ["serve_role"]


def serve_role(config: Config, args: argparse.Namespace) -> int:
    """Run one role (or receiver + dispatcher here and a worker process for ``all``).
    A broker or database that cannot be reached at start: the reason (URLs without
    passwords) on stderr and exit code 2."""
    queues = [q for q in (args.queues or "").split(",") if q] or None
    try:
        if args.role == "worker":
            from dicomnode.scaleout.worker_role import WorkerRole  # noqa: PLC0415 - celery worker only here
            return WorkerRole(config, queues).run()
        return _serve_node(config, args)
    except (DicomNodeError, OSError) as exc:
        print(f"dicomnode: cannot start the {args.role} role: {exc}", file=sys.stderr)
        return 2


def _serve_node(config: Config, args: argparse.Namespace) -> int:
    from dicomnode.scaleout.roles import ScaleNode  # noqa: PLC0415

    roles = {"receiver", "dispatcher"} if args.role == "all" else {args.role}
    node = ScaleNode(config, roles)
    worker = _start_worker(args) if args.role == "all" else None
    try:
        node.start()
    except (DicomNodeError, OSError):
        node.shutdown(0)
        raise
    finally:
        if worker is not None and worker.poll() is not None:
            print("dicomnode: the worker process of --role all exited at start", file=sys.stderr)
    if node.scp is not None:
        print(f"dicomnode {args.role}: listening as {config.node.ae_title} on {config.node.host}:{node.port} "
              f"(Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        node.serve(args.drain_timeout)
    finally:
        if worker is not None:
            _stop_worker(worker, args.drain_timeout + 10)
    return 0


def _start_worker(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """``--role all``: the worker runs as a child process (Celery's worker owns its process)."""
    argv = [sys.executable, "-m", "dicomnode", "serve", "--role", "worker"]
    if args.config is not None:
        argv += ["--config", str(args.config)]
    if args.queues:
        argv += ["--queues", args.queues]
    return subprocess.Popen(argv, env={**os.environ, "DICOMNODE_HTTP__PORT": "0"})  # the parent serves HTTP


def _stop_worker(worker: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM (Celery's warm shutdown: the running job may finish), SIGKILL after ``timeout_s``
    (its unacknowledged job then goes back to the queue)."""
    worker.terminate()
    try:
        worker.wait(timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)
