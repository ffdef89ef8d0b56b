"""``dicomnode jobs``: list, show and re-send jobs from the spool (works while the node runs)."""

from __future__ import annotations

import argparse
import json
import time

from dicomnode.config import Config
from dicomnode.dispatch import rearm
from dicomnode.errors import SpoolError
from dicomnode.spool import Spool

__all__ = ["jobs_command"]


def _row(record: dict[str, object]) -> str:
    dests = record.get("destinations") or {}
    assert isinstance(dests, dict)
    attempts = max((int(s.get("attempts", 0)) for s in dests.values()), default=0)
    errors = [f"{n}: {s['last_error']}" for n, s in dests.items() if s.get("last_error")]
    error = str(record.get("error") or "; ".join(errors))
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("created", 0))))  # type: ignore[arg-type]
    return (f"{record['job_id']:<26} {record.get('state', '?'):<12} {record.get('route', ''):<12} "
            f"{attempts:>3}  {created}  {error[:90]}")


def jobs_command(config: Config, args: argparse.Namespace) -> int:
    """Run ``jobs list|show|retry``; returns the exit code."""
    spool = Spool(config.spool.path)
    if args.action == "list":
        print(f"{'JOB':<26} {'STATE':<12} {'ROUTE':<12} {'TRY':>3}  {'CREATED':<19}  LAST ERROR")
        for job_id in spool.job_ids():
            try:
                record = spool.read_job(job_id)
            except SpoolError as exc:
                print(f"{job_id:<26} unreadable   {exc}")
                continue
            if args.state is None or record.get("state") == args.state:
                print(_row(record))
        return 0
    if not args.job_id:
        print(f"dicomnode jobs {args.action}: give a JOB id (see 'dicomnode jobs')")
        return 2
    if args.action == "show":
        print(json.dumps(spool.read_job(args.job_id), indent=1))
        return 0
    with spool.job_lock(args.job_id):
        record = spool.read_job(args.job_id)
        if record.get("state") == "failed":
            record.update(state="queued", error="", crashes=0)
            armed = True
        else:
            armed = rearm(record)
        if armed:
            spool.write_job(args.job_id, record)
    if not armed:
        print(f"job {args.job_id}: nothing to re-send (state {record.get('state')})")
        return 1
    spool.request_retry(args.job_id)
    print(f"job {args.job_id}: re-armed ({record['state']}); a running node picks it up within a second, "
          "otherwise at its next start")
    return 0
