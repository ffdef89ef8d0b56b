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

Received instances (the hot path) are made durable differently, by default
(``spool.sync: syncfs``): the instance is written to ``tmp/``, renamed into its series
folder (the folder and ``series.json`` made first if new), and then one ``syncfs(2)`` of
the spool's file system is shared by every instance that reached that point meanwhile, on
any association (group commit, :class:`GroupSync`). The C-STORE success is sent only after
that ``syncfs`` returned, and the assembler hears of the instance only then.

Why that is as durable as fsync + rename + fsync(folder): ``syncfs`` writes back all dirty
data *and metadata* of the file system and waits for it, which includes the instance's
data blocks, the new directory entries (``mkdir``, ``rename``) and ``series.json``; on
ext4/XFS it ends with a journal commit, as ``fsync`` does. A power loss before it returns
loses only instances not yet acknowledged (the sender sends them again); after it, the
file is in its final place. ``kill -9`` cannot lose an acknowledged instance either way
(the page cache survives the process). One caveat, documented for IT: Linux reports
write-back errors through ``syncfs`` only since 5.8; older kernels get ``spool.sync:
fsync`` (per-file fsync, the earlier behaviour, about half the ingest rate).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomnode.errors import SpoolError

__all__ = ["SYNC_MODES", "GroupSync", "Spool", "atomic_write", "fsync_dir", "syncfs"]

SYNC_MODES = ("syncfs", "fsync")
_STRIPES = 64


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync folder.

    ``durable=False`` skips both fsyncs: the caller makes it durable later (group commit).
    """
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def syncfs(fd: int) -> None:
    """``syncfs(2)``: write back and wait for the whole file system holding ``fd``."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")


class GroupSync:
    """Group commit: one ``syncfs`` serves every caller that asked before it started.

    A caller asks after its own writes finished; it returns once a ``syncfs`` that
    *started after* its request has completed. While one runs, later callers queue up and
    the next ``syncfs`` covers them all, so N concurrent associations pay about one sync
    per round instead of N.
    """

    def __init__(self, root: Path) -> None:
        self._root, self._fd = root, -1
        self._cond = threading.Condition()
        self._asked = self._done = 0
        self._running = False
        self.rounds = 0

    def sync(self) -> None:
        """Return when everything written before this call is durable (raises ``OSError``)."""
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._done < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._lead()

    def _lead(self) -> None:
        """Run one ``syncfs`` for everyone who asked so far (called holding the lock)."""
        self._running, target = True, self._asked
        self._cond.release()
        try:
            if self._fd < 0:
                self._fd = os.open(self._root, os.O_RDONLY)
            syncfs(self._fd)
        finally:  # on an error: no progress; the next caller leads a new round (or fails too)
            self._cond.acquire()
            self._running = False
            self._cond.notify_all()
        self._done, self.rounds = max(self._done, target), self.rounds + 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


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
    sync
        How received instances are made durable: ``syncfs`` (group commit, default) or
        ``fsync`` (per file and folder).
    shared
        Other processes write into ``incoming/`` too (``node.receivers`` > 1): the series
        lock is then also a ``flock`` on one of 64 lock files in ``locks/``.
    """

    def __init__(self, root: Path, sync: str = "syncfs", shared: bool = False) -> None:
        if sync not in SYNC_MODES:
            raise SpoolError(f"spool sync mode {sync!r} is not one of {SYNC_MODES}")
        self.root, self.sync_mode = root, sync
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        for sub in ("tmp", "incoming", "jobs", "unmatched", "requests"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in [root, *(root / s for s in ("tmp", "incoming", "jobs", "unmatched", "requests"))]:
            os.chmod(folder, 0o700)
        self._group = GroupSync(root) if sync == "syncfs" else None
        self._stripes: list[int] | None = None
        if shared:
            (root / "locks").mkdir(mode=0o700, exist_ok=True)
            self._stripes = [os.open(root / "locks" / f"series-{i:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                             for i in range(_STRIPES)]

    # -- instances ---------------------------------------------------------------------
    @contextlib.contextmanager
    def series_lock(self, series_uid: str) -> Iterator[None]:
        """Hold the lock that serialises writes into and moves of one incoming series
        (across processes too when the spool is ``shared``)."""
        with self._guard:
            lock = self._locks.setdefault(series_uid, threading.Lock())
        with lock:
            if self._stripes is None:
                yield
                return
            fd = self._stripes[zlib.crc32(series_uid.encode()) % _STRIPES]
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def incoming_dir(self, series_uid: str) -> Path:
        return self.root / "incoming" / _safe_name(series_uid)

    def free_mb(self) -> float:
        """Free space on the spool's file system in MiB."""
        return shutil.disk_usage(self.root).free / (1 << 20)

    def temp_path(self) -> Path:
        """A fresh name in ``tmp/`` (where received instances are written first)."""
        return self.root / "tmp" / f"{uuid.uuid4().hex}.part"

    def adopt_temp(self, path: Path) -> Path:
        """Take a file written elsewhere (pynetdicom's chunked receive) into ``tmp/``."""
        tmp = self.temp_path()
        try:
            os.replace(path, tmp)
        except OSError:  # another file system: copy (the original is pynetdicom's to delete)
            shutil.copyfile(path, tmp)
        if self._group is None:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        return tmp

    def make_durable(self) -> None:
        """Step 3: in ``syncfs`` mode, the shared sync covering everything committed so far."""
        if self._group is not None:
            self._group.sync()

    def commit_instance(self, tmp: Path, series_uid: str, sop_uid: str, headers: dict[str, Any]) -> bool:
        """Move a temp file into its series folder (step 2); ``False`` if it was a duplicate.

        The caller holds :meth:`series_lock`, and calls :meth:`make_durable` before it
        answers (in ``fsync`` mode everything here is already fsync'd). The first instance
        of a series also writes ``series.json`` with the routing headers.
        """
        folder = self.incoming_dir(series_uid)
        target = folder / f"{_safe_name(sop_uid)}.dcm"
        if target.exists():
            tmp.unlink(missing_ok=True)
            return False
        per_file = self._group is None
        if not folder.exists():
            folder.mkdir(mode=0o700)
            if per_file:
                fsync_dir(folder.parent)
        sidecar = folder / "series.json"
        if not sidecar.exists():
            record = {"headers": headers, "first_seen": time.time()}
            atomic_write(sidecar, json.dumps(record, indent=1).encode(), self.root / "tmp", durable=per_file)
        os.replace(tmp, target)
        if per_file:
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

    def clean_tmp(self, older_than_s: float = 0.0) -> int:
        """Remove half-written temp files left by a crash; returns how many. On a spool
        shared by several receivers only files untouched for ``older_than_s`` go (the
        others may be arriving right now)."""
        limit = time.time() - older_than_s
        stale = [p for p in (self.root / "tmp").iterdir() if older_than_s <= 0 or _mtime(p) < limit]
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


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone meanwhile: nothing to clean
