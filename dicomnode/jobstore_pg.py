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
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dicomnode.errors import JobStateError, SpoolError
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import FileJobStore, JobFactory, Recovered, count_states
from dicomnode.spool import Spool, atomic_write, fsync_dir

__all__ = ["PostgresJobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dicomnode_jobs (
    id      text PRIMARY KEY,
    state   text NOT NULL,
    record  jsonb NOT NULL,
    updated double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS dicomnode_jobs_state ON dicomnode_jobs (state, updated);
CREATE TABLE IF NOT EXISTS dicomnode_retry_requests (job_id text PRIMARY KEY);
"""
#: Serialises schema creation by several nodes starting at once (``CREATE … IF NOT EXISTS`` races).
_SCHEMA_LOCK = 0x6A6F6273


def redacted(conninfo: str) -> str:
    """``conninfo`` (URL or ``key=value``) without its password, for messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    return " ".join(f"{k}={'***' if k == 'password' else v}" for k, v in params.items())


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

    Raises
    ------
    SpoolError
        The database cannot be reached or its tables cannot be created (message names the
        database without its password).
    """

    def __init__(self, spool: Spool, conninfo: str) -> None:
        super().__init__(spool)
        self.conninfo = conninfo
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(_SCHEMA)

    # -- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction (committed on success, else rolled back)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise SpoolError(f"job database {redacted(self.conninfo)}: {exc}") from exc
        finally:
            if conn is not None and not conn.closed:
                with self._lock:
                    self._idle.append(conn)

    def close(self) -> None:
        """Close the pooled connections (the store opens new ones if used again)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
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
        with self._transaction() as conn:
            self._insert(conn, record)
            os.replace(staging, self.job_dir(job.job_id))
            fsync_dir(self.spool.root / "jobs")
        (self.job_dir(job.job_id) / "job.json").unlink(missing_ok=True)

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], record: dict[str, Any]) -> None:
        conn.execute("INSERT INTO dicomnode_jobs (id, state, record, updated) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT (id) DO NOTHING",
                     (record["job_id"], record["state"], Jsonb(record), record["updated"]))

    def get(self, job_id: str) -> Job:
        with self._transaction() as conn:
            row = conn.execute("SELECT record FROM dicomnode_jobs WHERE id = %s", (job_id,)).fetchone()
        return _job(job_id, row)

    def ids(self) -> list[str]:
        with self._transaction() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM dicomnode_jobs ORDER BY id")]

    def change(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        with self._transaction() as conn:
            row = conn.execute("SELECT record FROM dicomnode_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            before = _job(job_id, row)
            after = transition(before)
            if after != before:
                record = after.to_json()
                record["updated"] = time.time()
                conn.execute("UPDATE dicomnode_jobs SET state = %s, record = %s, updated = %s WHERE id = %s",
                             (record["state"], Jsonb(record), record["updated"], job_id))
                after = Job.from_json(record)
        return after

    # -- retry requests, counts, retention ---------------------------------------------
    def request_retry(self, job_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO dicomnode_retry_requests (job_id) VALUES (%s) ON CONFLICT DO NOTHING",
                         (job_id,))

    def take_requests(self) -> list[str]:
        with self._transaction() as conn:
            return sorted(r[0] for r in conn.execute("DELETE FROM dicomnode_retry_requests RETURNING job_id"))

    def counts(self) -> dict[str, int]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, record FROM dicomnode_jobs").fetchall()
        return count_states(partial(_job, job_id, (record,)) for job_id, record in rows)

    def expire(self, retention_s: float, now: float | None = None) -> int:
        """Forget ``done`` and ``refused`` jobs last changed longer ago than the retention (row and folder)."""
        limit = (now or time.time()) - retention_s
        with self._transaction() as conn:
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
        for job_id in self.spool.job_ids():
            leftover = self.job_dir(job_id) / "job.json"
            if leftover.exists():
                with self._transaction() as conn:
                    self._insert(conn, json.loads(leftover.read_text()))
                leftover.unlink()
        return super().recover(factory)


def _job(job_id: str, row: tuple[Any, ...] | None) -> Job:
    if row is None:
        raise SpoolError(f"job {job_id}: no such job in the job database")
    try:
        return Job.from_json(row[0])
    except JobStateError as exc:
        raise SpoolError(f"job {job_id}: {exc}") from exc
