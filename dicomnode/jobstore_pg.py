"""The :class:`~dicomnode.jobstore.JobStore` on PostgreSQL, for several nodes on one shared spool.

The database holds the job records only: one row per job in ``dicomnode_jobs`` (``id``,
``state``, the JSON ``record``, ``updated``) and the retry requests in
``dicomnode_retry_requests``. Job folders (``input/``, ``outputs/``, ``work/``) stay on
the shared spool (the same path on every machine). :meth:`PostgresJobStore.change` runs
in one transaction that reads the row ``SELECT … FOR UPDATE``: two nodes applying
``start_run`` to one queued job are serialised, and the second sees ``running`` and gets
:class:`~dicomnode.errors.JobStateError` — a job is never claimed twice.

Publishing a job (:meth:`PostgresJobStore.create`) assembles its folder under
``jobs/.<id>.new`` (with a ``job.json`` for recovery), inserts the row and renames the
folder into place inside one transaction, then drops the ``job.json``. A crash at any
point is finished by :meth:`PostgresJobStore.recover`, as for the file store. psycopg 3
is imported here only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dicomnode.config import Config
from dicomnode.errors import JobStateError, SpoolError
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import FileJobStore, JobFactory, Recovered, count_states
from dicomnode.spool import Spool, atomic_write, fsync_dir

__all__ = ["PostgresJobStore", "open_ledger", "redacted"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dicomnode_jobs (
    id      text PRIMARY KEY,
    state   text NOT NULL,
    record  jsonb NOT NULL,
    updated double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS dicomnode_jobs_state ON dicomnode_jobs (state, updated);
CREATE TABLE IF NOT EXISTS dicomnode_retry_requests (job_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS dicomnode_outbox (
    job_id   text PRIMARY KEY,
    queue    text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_try double precision NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dicomnode_to_dispatch (job_id text PRIMARY KEY);
"""
#: Job states a dispatcher acts on: deliver the outputs, or report the failure.
_DISPATCH_STATES = (JobState.DISPATCHING, JobState.FAILED)
#: States from which ``dicomnode jobs retry`` queues a job again (it needs publishing anew).
_ENDED_STATES = (JobState.FAILED, JobState.REFUSED, JobState.DEAD, JobState.DONE)
#: A pooled connection idle longer than this is pinged before use.
_PING_AFTER_S = 1.0
#: Serialises schema creation by several nodes starting at once (``CREATE … IF NOT EXISTS`` races).
_SCHEMA_LOCK = 0x6A6F6273


def redacted(conninfo: str) -> str:
    """``conninfo`` (URL or ``key=value``) without its password, for messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    return " ".join(f"{k}={'***' if k == 'password' else v}" for k, v in params.items())


def open_ledger(config: Config, spool: Spool) -> PostgresJobStore:
    """The job store of the scale-out mode: ``executor.database_url``, outbox keyed by the
    executor's queue of each job's pipeline."""
    return PostgresJobStore(spool, config.executor.database_url,
                            queue_of=lambda job: config.executor.queue_of(job.pipeline))


class PostgresJobStore(FileJobStore):
    """:class:`~dicomnode.jobstore.JobStore` with records in PostgreSQL, folders on the spool.

    Folder handling and crash recovery are the file store's; every record operation goes
    to the database. Safe from several threads (a small connection pool) and several
    processes or machines (row locks). :meth:`recover` re-queues every ``running`` job,
    as the file store does: with several nodes, only a start with no other node running
    jobs may call it (the scale-out executor redelivers a dead worker's job instead).

    Parameters
    ----------
    spool
        The shared spool (the same path on every node).
    conninfo
        libpq connection string or ``postgresql://`` URL.
    queue_of
        Scale-out mode: the queue a job is published to. Then every job that becomes
        ``queued`` (created, or re-armed by ``dicomnode jobs retry``) gets a row in the
        outbox ``dicomnode_outbox``, and every job that becomes ``dispatching`` or
        ``failed`` a row in ``dicomnode_to_dispatch``, *in the same transaction* as the
        change: a crash can delay a publish or a delivery, never lose it.

    Raises
    ------
    SpoolError
        The database cannot be reached or its tables cannot be created (message names the
        database without its password).
    """

    def __init__(self, spool: Spool, conninfo: str, queue_of: Callable[[Job], str] | None = None) -> None:
        super().__init__(spool)
        self.conninfo, self.queue_of = conninfo, queue_of
        self._idle: list[tuple[psycopg.Connection[Any], float]] = []  # with the time it was put back
        self._lock = threading.Lock()
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)

    # -- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction (committed on success, else rolled back)."""
        conn = None
        try:
            conn = self._checkout()
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise SpoolError(f"job database {redacted(self.conninfo)}: {exc}") from exc
        finally:
            if conn is not None and not conn.closed:
                with self._lock:
                    self._idle.append((conn, time.monotonic()))

    def _checkout(self) -> psycopg.Connection[Any]:
        """An idle pooled connection that still works, else a new one. One idle for a while
        is pinged first: after a database restart it is dead, and its first statement would
        fail the caller's transaction (a receiver would refuse an instance for nothing)."""
        with self._lock:
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
        if conn is not None and not conn.closed and time.monotonic() - since > _PING_AFTER_S:
            try:
                conn.execute("SELECT 1")
            except psycopg.Error:
                conn.close()
        if conn is None or conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        return conn

    def close(self) -> None:
        """Close the pooled connections (the store opens new ones if used again)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    # -- records -----------------------------------------------------------------------
    def create(self, job: Job, series_uid: str | None) -> None:
        staging = self.spool.staging_dir(job.job_id)
        staging.mkdir(mode=0o700, exist_ok=True)
        (staging / "outputs").mkdir(mode=0o700, exist_ok=True)
        if series_uid is not None:
            os.replace(self.spool.incoming_dir(series_uid), staging / "input")
            fsync_dir(self.spool.root / "incoming")
        record = job.to_json()
        record["updated"] = time.time()
        atomic_write(staging / "job.json", json.dumps(record, indent=1).encode())
        with self.transaction() as conn:
            self._insert(conn, record)
            self._notes(conn, None, job)
            os.replace(staging, self.job_dir(job.job_id))
            fsync_dir(self.spool.root / "jobs")
        (self.job_dir(job.job_id) / "job.json").unlink(missing_ok=True)

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], record: dict[str, Any]) -> None:
        conn.execute("INSERT INTO dicomnode_jobs (id, state, record, updated) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT (id) DO NOTHING",
                     (record["job_id"], record["state"], Jsonb(record), record["updated"]))

    def get(self, job_id: str) -> Job:
        with self.transaction() as conn:
            row = conn.execute("SELECT record FROM dicomnode_jobs WHERE id = %s", (job_id,)).fetchone()
        return _job(job_id, row)

    def ids(self) -> list[str]:
        with self.transaction() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM dicomnode_jobs ORDER BY id")]

    def change(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        with self.transaction() as conn:
            row = conn.execute("SELECT record FROM dicomnode_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            before = _job(job_id, row)
            after = transition(before)
            if after != before:
                record = after.to_json()
                record["updated"] = time.time()
                conn.execute("UPDATE dicomnode_jobs SET state = %s, record = %s, updated = %s WHERE id = %s",
                             (record["state"], Jsonb(record), record["updated"], job_id))
                self._notes(conn, before, after)
                after = Job.from_json(record)
        return after

    def _notes(self, conn: psycopg.Connection[Any], before: Job | None, after: Job) -> None:
        """Scale-out: what the change asks of other processes, in its transaction."""
        if self.queue_of is None or (before is not None and before.state is after.state):
            return
        if after.state is JobState.QUEUED and (before is None or before.state in _ENDED_STATES):
            conn.execute("INSERT INTO dicomnode_outbox (job_id, queue) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                         (after.job_id, self.queue_of(after)))
        elif after.state in _DISPATCH_STATES:
            conn.execute("INSERT INTO dicomnode_to_dispatch (job_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (after.job_id,))

    # -- scale-out: outbox and dispatch notes --------------------------------------------
    def publish_due(self, publish: Callable[[str, str], None], retry_s: float = 5.0, limit: int = 50) -> int:
        """Publish the outbox rows that are due with ``publish(job_id, queue)``; a row
        leaves the outbox only when its publish returned (the broker confirmed it). A
        failed publish (broker down) is tried again after ``retry_s``. Returns how many
        were published. Several processes may call this at once (``SKIP LOCKED``)."""
        done = 0
        with self.transaction() as conn:
            rows = conn.execute("SELECT job_id, queue, attempts FROM dicomnode_outbox WHERE next_try <= %s "
                                "ORDER BY job_id LIMIT %s FOR UPDATE SKIP LOCKED", (time.time(), limit)).fetchall()
            for job_id, queue, attempts in rows:
                try:
                    publish(job_id, queue)
                except Exception as exc:  # noqa: BLE001 - any broker error: keep it in the outbox
                    conn.execute("UPDATE dicomnode_outbox SET attempts = %s, next_try = %s WHERE job_id = %s",
                                 (attempts + 1, time.time() + retry_s, job_id))
                    log.warning("job %s: publish to queue %s failed (attempt %d), kept in the outbox: %s: %s",
                                job_id, queue, attempts + 1, type(exc).__name__, exc)
                    break  # the broker is likely down: the rest waits for the next round
                conn.execute("DELETE FROM dicomnode_outbox WHERE job_id = %s", (job_id,))
                done += 1
        return done

    def outbox_size(self) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT count(*) FROM dicomnode_outbox").fetchone()
        return int(row[0]) if row else 0

    def take_to_dispatch(self) -> list[str]:
        """Jobs that became ``dispatching`` or ``failed`` since the last call (any process)."""
        with self.transaction() as conn:
            return sorted(r[0] for r in conn.execute("DELETE FROM dicomnode_to_dispatch RETURNING job_id"))

    def ids_in(self, *states: JobState) -> list[str]:
        with self.transaction() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM dicomnode_jobs WHERE state = ANY(%s) ORDER BY id",
                                               ([s.value for s in states],))]

    def ping(self) -> str:
        """"" when the database answers, else why not (for ``/healthz``)."""
        try:
            with self.transaction() as conn:
                conn.execute("SELECT 1")
        except SpoolError as exc:
            return str(exc)
        return ""

    # -- retry requests, counts, retention ---------------------------------------------
    def request_retry(self, job_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO dicomnode_retry_requests (job_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (job_id,))

    def take_requests(self) -> list[str]:
        with self.transaction() as conn:
            return sorted(r[0] for r in conn.execute("DELETE FROM dicomnode_retry_requests RETURNING job_id"))

    def counts(self) -> dict[str, int]:
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, record FROM dicomnode_jobs").fetchall()
        return count_states(partial(_job, job_id, (record,)) for job_id, record in rows)

    def expire(self, retention_s: float, now: float | None = None) -> int:
        """Forget ``done`` and ``refused`` jobs last changed longer ago than the retention (row and folder)."""
        limit = (now or time.time()) - retention_s
        with self.transaction() as conn:
            gone = [r[0] for r in conn.execute("DELETE FROM dicomnode_jobs WHERE state = ANY(%s) AND updated < %s "
                                               "RETURNING id", ([JobState.DONE.value, JobState.REFUSED.value],
                                                                limit))]
        for job_id in gone:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return len(gone)

    # -- recovery ----------------------------------------------------------------------
    def recover(self, factory: JobFactory) -> Recovered:
        """Also publishes the row of a job whose folder was renamed into place but whose
        insert was not committed (its ``job.json`` is still there)."""
        self.finish_half_made(factory)
        return super().recover(factory)

    def finish_half_made(self, factory: JobFactory, older_than_s: float = 0.0) -> int:
        """Finish the jobs a crash left half-made: a staging folder (``jobs/.<id>.new``), or a
        job folder whose row was not committed (its ``job.json`` still there); returns how
        many. With several receivers on one spool (scale-out) only those untouched for
        ``older_than_s`` are taken: a younger one may be in the making right now."""
        limit = time.time() - older_than_s
        staged = [j for j in self.spool.staged_jobs() if _mtime(self.spool.staging_dir(j)) < limit]
        for job_id in staged:
            self._finish_creating(job_id, factory)
        uncommitted = [j for j in self.spool.job_ids() if _mtime(self.job_dir(j) / "job.json") < limit]
        for job_id in uncommitted:
            leftover = self.job_dir(job_id) / "job.json"
            record = json.loads(leftover.read_text())
            with self.transaction() as conn:
                self._insert(conn, record)
                self._notes(conn, None, Job.from_json(record))
            leftover.unlink()
        return len(staged) + len(uncommitted)


def _mtime(path: Path) -> float:
    """Last change of ``path``; infinity when it does not exist (nothing to finish)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _job(job_id: str, row: tuple[Any, ...] | None) -> Job:
    if row is None:
        raise SpoolError(f"job {job_id}: no such job in the job database")
    try:
        return Job.from_json(row[0])
    except JobStateError as exc:
        raise SpoolError(f"job {job_id}: {exc}") from exc
