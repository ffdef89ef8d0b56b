"""Durable on-disk state: spooled instances, series sidecars and job records.

Layout under ``spool.path`` (every folder 0700)::

    tmp/                          in-flight writes (cleaned at start)
    incoming/<series_uid>/        a series still assembling
        series.json               routing headers + first arrival (written once)
        <sop_instance_uid>.dcm    instances exactly as received
    jobs/.<job_id>.new/           a job being created (published by one rename)
    jobs/<job_id>/                a completed series and everything done with it
        input/                    the series folder, moved here by one rename
        job.json                  state, route, attempts, errors (atomic rewrite)
        outputs/                  SEG/SR files, preview.png, findings.json
    unmatched/<series_uid>/       series no route matched (expire by retention)
    requests/                     ``retry-<job_id>`` files dropped by ``dicomnode jobs retry``

Every transition is a write to a temp file, ``fsync`` and ``rename`` (plus an fsync of
the folder), so a crash at any point leaves either the old or the new state. A restart
rebuilds everything from these folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomnode.errors import SpoolError

__all__ = ["Spool", "atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync folder."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _safe_name(uid: str) -> str:
    if not uid or any(c not in "0123456789." for c in uid) or len(uid) > 64:
        raise SpoolError(f"refusing to use {uid!r} as a file name: not a DICOM UID")
    return uid


class Spool:
    """The spool folder; thread-safe for one node process.

    Parameters
    ----------
    root
        Spool folder (created 0700 if missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        for sub in ("tmp", "incoming", "jobs", "unmatched", "requests"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in [root, *(root / s for s in ("tmp", "incoming", "jobs", "unmatched", "requests"))]:
            os.chmod(folder, 0o700)

    # -- instances ---------------------------------------------------------------------
    def series_lock(self, series_uid: str) -> threading.Lock:
        """The lock that serialises writes into and moves of one incoming series."""
        with self._guard:
            return self._locks.setdefault(series_uid, threading.Lock())

    def incoming_dir(self, series_uid: str) -> Path:
        return self.root / "incoming" / _safe_name(series_uid)

    def free_mb(self) -> float:
        """Free space on the spool's file system in MiB."""
        return shutil.disk_usage(self.root).free / (1 << 20)

    def write_temp(self, data: bytes) -> Path:
        """Write received bytes durably to ``tmp/`` (step 1 of storing an instance)."""
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def commit_instance(self, tmp: Path, series_uid: str, sop_uid: str, headers: dict[str, Any]) -> bool:
        """Move a temp file into its series folder (step 2); ``False`` if it was a duplicate.

        The caller holds :meth:`series_lock`. The first instance of a series also writes
        ``series.json`` with the routing headers.
        """
        folder = self.incoming_dir(series_uid)
        target = folder / f"{_safe_name(sop_uid)}.dcm"
        if target.exists():
            tmp.unlink(missing_ok=True)
            return False
        if not folder.exists():
            folder.mkdir(mode=0o700)
            fsync_dir(folder.parent)
        sidecar = folder / "series.json"
        if not sidecar.exists():
            record = {"headers": headers, "first_seen": time.time()}
            atomic_write(sidecar, json.dumps(record, indent=1).encode(), self.root / "tmp")
        os.replace(tmp, target)
        fsync_dir(folder)
        return True

    def incoming_series(self) -> list[str]:
        """Series UIDs with a folder in ``incoming/``."""
        return sorted(p.name for p in (self.root / "incoming").iterdir() if p.is_dir())

    def series_record(self, folder: Path) -> dict[str, Any]:
        """The ``series.json`` sidecar of a series folder."""
        try:
            return dict(json.loads((folder / "series.json").read_text()))
        except (OSError, ValueError) as exc:
            raise SpoolError(f"{folder}/series.json unreadable: {exc}") from exc

    def clean_tmp(self) -> int:
        """Remove half-written temp files left by a crash; returns how many."""
        stale = list((self.root / "tmp").iterdir())
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    # -- series → job -------------------------------------------------------------------
    def new_job_id(self, series_uid: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return f"{stamp}-{uuid.uuid4().hex[:8]}"

    def create_job(self, series_uid: str | None, job_id: str, record: dict[str, Any]) -> Path:
        """Turn ``incoming/<series>`` into ``jobs/<job_id>`` with its ``job.json``, atomically.

        The job is assembled in a hidden ``jobs/.<job_id>.new`` folder (input moved in by
        one rename, job.json written) and published by a final rename, so readers never
        see a job without its record. ``series_uid=None`` publishes a half-made job found
        at start (its input is already inside).
        """
        staging = self.root / "jobs" / f".{job_id}.new"
        staging.mkdir(mode=0o700, exist_ok=True)
        (staging / "outputs").mkdir(mode=0o700, exist_ok=True)
        if series_uid is not None:
            os.replace(self.incoming_dir(series_uid), staging / "input")
            fsync_dir(self.root / "incoming")
        record["updated"] = time.time()
        atomic_write(staging / "job.json", json.dumps(record, indent=1).encode())
        os.replace(staging, self.job_dir(job_id))
        fsync_dir(self.root / "jobs")
        return self.job_dir(job_id)

    def staged_jobs(self) -> list[str]:
        """Job ids of half-made jobs (a crash during :meth:`create_job`)."""
        return sorted(p.name[1:-4] for p in (self.root / "jobs").glob(".*.new") if p.is_dir())

    def staging_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / f".{job_id}.new"

    def move_unmatched(self, series_uid: str) -> Path:
        """Move an unrouted series to ``unmatched/`` (kept until retention expires)."""
        target = self.root / "unmatched" / f"{_safe_name(series_uid)}-{uuid.uuid4().hex[:6]}"
        os.replace(self.incoming_dir(series_uid), target)
        fsync_dir(self.root / "unmatched")
        return target

    # -- jobs ---------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise SpoolError(f"bad job id {job_id!r}")
        return self.root / "jobs" / job_id

    def job_ids(self) -> list[str]:
        return sorted(p.name for p in (self.root / "jobs").iterdir() if p.is_dir() and not p.name.startswith("."))

    def read_job(self, job_id: str) -> dict[str, Any]:
        path = self.job_dir(job_id) / "job.json"
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise SpoolError(f"job {job_id}: no job.json at {path}") from exc
        except ValueError as exc:
            raise SpoolError(f"job {job_id}: job.json is corrupt: {exc}") from exc

    def write_job(self, job_id: str, record: dict[str, Any]) -> None:
        record["updated"] = time.time()
        atomic_write(self.job_dir(job_id) / "job.json", json.dumps(record, indent=1).encode())

    @contextlib.contextmanager
    def job_lock(self, job_id: str) -> Iterator[None]:
        """Exclusive cross-process lock on one job (the node and ``dicomnode jobs``)."""
        with open(self.job_dir(job_id) / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def request_retry(self, job_id: str) -> None:
        """Ask a running node to pick up a job again (``dicomnode jobs retry``)."""
        atomic_write(self.root / "requests" / f"retry-{job_id}", b"")

    def take_requests(self) -> list[str]:
        """Job ids whose retry was requested; the request files are consumed."""
        ids = []
        for path in sorted((self.root / "requests").glob("retry-*")):
            ids.append(path.name[len("retry-"):])
            path.unlink(missing_ok=True)
        return ids

    def expire(self, retention_s: float, now: float | None = None) -> int:
        """Delete unmatched series older than the retention; returns how many (done jobs:
        :meth:`dicomnode.jobstore.FileJobStore.expire`)."""
        limit = (now or time.time()) - retention_s
        removed = 0
        for folder in (self.root / "unmatched").iterdir():
            if folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed
