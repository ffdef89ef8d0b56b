"""``dicomnode jobs``: list, show and re-send jobs from the spool (works while the node runs)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dicomnode import jobs
from dicomnode.cli.common import load
from dicomnode.errors import JobStateError, SpoolError
from dicomnode.jobs import Job
from dicomnode.jobstore import FileJobStore
from dicomnode.spool import Spool

__all__ = ["add_parser", "run"]


def _note(job: Job) -> str:
    """Why the input was refused, or the out-of-distribution flags of an accepted one."""
    if job.refusal:
        return f"not analysed: {job.refusal.removeprefix('input refused: ')}"
    flags = (job.findings.get("input") or {}).get("flags") or []
    return f"flag: {'; '.join(map(str, flags))}" if flags else ""


def _row(job: Job) -> str:
    attempts = max((d.attempts for d in job.destinations.values()), default=0)
    errors = [f"{n}: {d.last_error}" for n, d in job.destinations.items() if d.last_error]
    error = job.error or "; ".join(errors) or _note(job)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created))
    return f"{job.job_id:<26} {job.state.value:<12} {job.route:<12} {attempts:>3}  {created}  {error[:120]}"


def _list(store: FileJobStore, state: str | None) -> int:
    print(f"{'JOB':<26} {'STATE':<12} {'ROUTE':<12} {'TRY':>3}  {'CREATED':<19}  LAST ERROR / NOT ANALYSED / FLAG")
    for job_id in store.ids():
        try:
            job = store.get(job_id)
        except SpoolError as exc:
            print(f"{job_id:<26} unreadable   {exc}")
            continue
        if state is None or job.state.value == state:
            print(_row(job))
    return 0


def _retry(store: FileJobStore, job_id: str) -> int:
    try:
        job = store.change(job_id, jobs.retry)
    except JobStateError as exc:
        print(f"job {job_id}: nothing to re-send ({exc})")
        return 1
    store.request_retry(job_id)
    print(f"job {job_id}: re-armed ({job.state.value}); a running node picks it up within a second, "
          "otherwise at its next start")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("jobs", help="list jobs, show one, or re-send a failed delivery")
    parser.add_argument("action", nargs="?", default="list", choices=("list", "show", "retry"))
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--state", help="only jobs in this state")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``jobs list|show|retry``; returns the exit code."""
    config = load(args)
    store = FileJobStore(Spool(config.spool.path))
    if config.executor.celery:  # scale-out: the records are in PostgreSQL
        from dicomnode.jobstore_pg import open_ledger  # noqa: PLC0415 - psycopg only when used
        store = open_ledger(config, Spool(config.spool.path, shared=True))
    if args.action == "list":
        return _list(store, args.state)
    if not args.job_id:
        print(f"dicomnode jobs {args.action}: give a JOB id (see 'dicomnode jobs')")
        return 2
    if args.action == "show":
        print(json.dumps(store.get(args.job_id).to_json(), indent=1))
        return 0
    return _retry(store, args.job_id)
