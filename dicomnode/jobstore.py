"""Where job records live: the :class:`JobStore` seam and its file-spool implementation.

Every stage reads and changes jobs through a store, never through ``job.json`` or a
record's raw keys: :meth:`JobStore.change` applies one transition of
:mod:`dicomnode.jobs` under the job's lock and writes the result atomically. The embedded
node uses :class:`FileJobStore` (the spool's ``jobs/<job_id>/job.json``); a database-backed
store for several machines implements the same methods (row lock + transaction instead of
``flock`` + rename), while instances and outputs stay on the shared spool.

Crash recovery lives here too (:meth:`JobStore.recover`): half-made jobs are finished or
their series put back, jobs left ``running`` by a killed node are queued again, and the
caller learns which jobs to run and which to deliver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from dicomnode import jobs
from dicomnode.errors import DicomNodeError, JobStateError, SpoolError
from dicomnode.jobs import Job, JobState
from dicomnode.spool import Spool

__all__ = ["FileJobStore", "JobFactory", "JobStore", "Recovered"]

log = logging.getLogger(__name__)

#: Builds the record of a job from its series headers (``None``: no route matches).
JobFactory = Callable[[str, dict[str, Any], int], Job | None]


@dataclass
class Recovered:
    """What :meth:`JobStore.recover` found: jobs to run and jobs to deliver (or report)."""

    to_run: list[str] = field(default_factory=list)
    to_dispatch: list[str] = field(default_factory=list)


class JobStore(Protocol):
    """Durable job records; every method is safe from several threads and processes."""

    def create(self, job: Job, series_uid: str | None) -> None:
        """Publish ``job`` with the instances of ``incoming/<series_uid>`` as its input, atomically."""

    def get(self, job_id: str) -> Job:
        """The job's record (:class:`~dicomnode.errors.SpoolError` if unreadable)."""

    def ids(self) -> list[str]:
        """Every published job, oldest first."""

    def change(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        """Apply ``transition`` under the job's lock and store the result; returns it."""

    def job_dir(self, job_id: str) -> Path:
        """The job's folder on the (shared) spool: ``input/``, ``outputs/``, ``work/``."""

    def recover(self, factory: JobFactory) -> Recovered:
        """At start: finish half-made jobs, queue interrupted runs; what to run and deliver."""

    def request_retry(self, job_id: str) -> None:
        """Ask the running node to pick the job up again (``dicomnode jobs retry``)."""

    def take_requests(self) -> list[str]:
        """Job ids whose retry was requested since the last call."""

    def counts(self) -> dict[str, int]:
        """Jobs per state value (``unreadable`` for a record that cannot be read)."""

    def expire(self, retention_s: float, now: float | None = None) -> int:
        """Forget ``done`` jobs older than the retention (their folders and records)."""


def count_states(readers: Iterable[Callable[[], Job]]) -> dict[str, int]:
    """Jobs per state value; ``unreadable`` for a record a reader cannot read (any store)."""
    counts: dict[str, int] = {}
    for read in readers:
        try:
            state = read().state.value
        except DicomNodeError:
            state = "unreadable"
        counts[state] = counts.get(state, 0) + 1
    return counts


class FileJobStore:
    """:class:`JobStore` on the file spool: one ``job.json`` per job folder.

    Parameters
    ----------
    spool
        The node's spool (durable writes, job folders, cross-process job locks).
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    # -- records ---------------------------------------------------------------------
    def create(self, job: Job, series_uid: str | None) -> None:
        self.spool.create_job(series_uid, job.job_id, job.to_json())

    def get(self, job_id: str) -> Job:
        try:
            return Job.from_json(self.spool.read_job(job_id))
        except JobStateError as exc:
            raise SpoolError(f"job {job_id}: {exc}") from exc

    def ids(self) -> list[str]:
        return self.spool.job_ids()

    def change(self, job_id: str, transition: Callable[[Job], Job]) -> Job:
        with self.spool.job_lock(job_id):
            before = self.get(job_id)
            after = transition(before)
            if after != before:
                record = after.to_json()
                self.spool.write_job(job_id, record)  # stamps "updated"
                after = Job.from_json(record)
        return after

    def job_dir(self, job_id: str) -> Path:
        return self.spool.job_dir(job_id)

    # -- retry requests ----------------------------------------------------------------
    def request_retry(self, job_id: str) -> None:
        self.spool.request_retry(job_id)

    def take_requests(self) -> list[str]:
        return self.spool.take_requests()

    def counts(self) -> dict[str, int]:
        return count_states(partial(self.get, job_id) for job_id in self.ids())

    def expire(self, retention_s: float, now: float | None = None) -> int:
        """Delete the folders of ``done`` and ``refused`` jobs last changed longer ago than the retention."""
        limit = (now or time.time()) - retention_s
        removed = 0
        for job_id in self.ids():
            with contextlib.suppress(DicomNodeError):
                job = self.get(job_id)
                if job.state in (JobState.DONE, JobState.REFUSED) and job.updated < limit:
                    shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
                    removed += 1
        return removed

    # -- recovery ----------------------------------------------------------------------
    def recover(self, factory: JobFactory) -> Recovered:
        for job_id in self.spool.staged_jobs():
            self._finish_creating(job_id, factory)
        found = Recovered()
        for job_id in self.ids():
            try:
                job = self._requeue_interrupted(job_id)
            except DicomNodeError as exc:
                log.error("job %s: record unreadable, left as it is: %s", job_id, exc)
                continue
            if job.state is JobState.QUEUED:
                found.to_run.append(job_id)
            elif job.state in (JobState.DISPATCHING, JobState.FAILED):
                found.to_dispatch.append(job_id)
        return found

    def _requeue_interrupted(self, job_id: str) -> Job:
        def again(job: Job) -> Job:
            if job.state is not JobState.RUNNING:
                return job
            log.warning("job %s was running when the node stopped; running it again", job_id)
            return jobs.recover(job)
        return self.change(job_id, again)

    def _finish_creating(self, job_id: str, factory: JobFactory) -> None:
        """A crash inside :meth:`create`: finish it, or put the series aside."""
        staging = self.spool.staging_dir(job_id)
        if (staging / "job.json").exists():
            job: Job | None = Job.from_json(json.loads((staging / "job.json").read_text()))
        elif (staging / "input" / "series.json").exists():
            headers = self.spool.series_record(staging / "input")["headers"]
            job = factory(job_id, headers, len(list((staging / "input").glob("*.dcm"))))
            if job is None:
                os.replace(staging / "input", self.spool.root / "unmatched" / job_id)
                shutil.rmtree(staging, ignore_errors=True)
                return
        else:
            shutil.rmtree(staging, ignore_errors=True)
            return
        assert job is not None
        self.create(job, None)
        log.warning("job %s: finished creating it after a crash", job_id)
