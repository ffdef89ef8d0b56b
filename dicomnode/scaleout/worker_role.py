"""The worker role of the scale-out mode: a Celery worker running jobs on a warm child process.

One process per GPU: Celery's ``solo`` pool with prefetch 1 takes one ``run_job`` message at
a time from the queues it is bound to; the job runs on a
:class:`~dicomnode.executor.ChildProcessExecutor` (models stay loaded between jobs, a
crashed child is replaced). The message is acknowledged only after the run's outcome is in
the job store:

- done, failed, refused, timed out → acknowledged; the store notes the job for the dispatcher;
- the child crashed → rejected back to the queue; RabbitMQ counts the delivery and, past
  ``executor.delivery_limit``, dead-letters it (rejected without requeue, i.e. dead-lettered at
  once, when ``worker.max_crashes`` is reached first);
- this worker is killed (``kill -9``, power) → RabbitMQ redelivers the unacknowledged message
  to another worker, which finds the job ``running`` and counts the lost run as a crash;
- a duplicate message (a re-published outbox row) finds the job no longer queued → dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from functools import partial
from typing import Any

from celery.exceptions import Reject

from dicomnode import jobs
from dicomnode.config import Config
from dicomnode.errors import DicomNodeError, SpoolError
from dicomnode.executor import ChildProcessExecutor, Outcome
from dicomnode.http_status import StatusServer
from dicomnode.jobs import JobState
from dicomnode.jobstore_pg import open_ledger
from dicomnode.metrics import Metrics
from dicomnode.scaleout.broker import RUN_JOB, Broker, used_queues
from dicomnode.spool import Spool
from dicomnode.worker import Worker

__all__ = ["WorkerRole"]

log = logging.getLogger(__name__)


class WorkerRole:
    """A Celery worker bound to ``queues`` (default: every pipeline queue)."""

    def __init__(self, config: Config, queues: list[str] | None = None) -> None:
        self.config = config
        self.queues = queues or used_queues(config)
        self.metrics = Metrics()
        self.store = open_ledger(config, Spool(config.spool.path, config.spool.sync, shared=True))
        self.runner = Worker(config, self.store, self.metrics, on_done=lambda _: None)
        self.broker = Broker(config)
        self.executor: ChildProcessExecutor | None = None
        self.http: StatusServer | None = None
        self.name = f"dicomnode-worker-{os.getpid()}@{socket.gethostname()}"

        def run_job(task: Any, job_id: str) -> str:  # a plain function: Celery binds the task to it
            return self._task(task, job_id)

        self.broker.app.task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job)

    def run(self) -> int:
        """Serve until SIGTERM (Celery's warm shutdown: the running job finishes first)."""
        self.broker.declare()
        self.executor = ChildProcessExecutor(self.config.log.format, self.config.log.level)
        if self.config.http.port:
            self.http = StatusServer(self.config.http.host, self.config.http.port, self.health, self.render_metrics)
            self.http.start()
        log.info("worker %s: queues %s, pipeline child process warm", self.name, ",".join(self.queues))
        worker = self.broker.app.Worker(queues=self.queues, pool="solo", concurrency=1, hostname=self.name,
                                        without_mingle=True, without_gossip=True, without_heartbeat=True,
                                        loglevel=self.config.log.level)
        try:
            worker.start()
        finally:
            self.executor.close(hard=False)
            if self.http is not None:
                self.http.stop()
            self.store.close()
        return int(worker.exitcode or 0)

    def _task(self, task: Any, job_id: str) -> str:
        """``run_job``: the Celery task body (``task`` is the bound task: its request).

        The job database away at any point: wait until it answers, then hand the message
        back to the queue. Its next delivery is marked redelivered, so a run that had
        started is counted as lost and runs again (at least once, never zero times)."""
        try:
            return self._run(task, job_id)
        except SpoolError as exc:
            log.error("job %s: job database unavailable (%s); waiting for it, then requeueing the job", job_id, exc)
            while self.store.ping():
                time.sleep(2.0)
            raise Reject(f"job {job_id}: job database was unavailable", requeue=True) from exc

    def _run(self, task: Any, job_id: str) -> str:
        assert self.executor is not None
        if task.request.delivery_info.get("redelivered"):
            job = self.store.change(job_id, partial(jobs.lost_worker, max_crashes=self.config.worker.max_crashes))
            if job.state is JobState.FAILED:
                return "failed"  # noted for the dispatcher by the store
        ran = self.runner.run_one(job_id, self.executor)
        if ran is None:
            log.info("job %s: delivered again but no longer queued (%s); message dropped", job_id,
                     self._state(job_id))
            return "duplicate"
        after, reply = ran
        if reply.outcome in (Outcome.CRASHED, Outcome.INTERRUPTED):
            # back to the queue (RabbitMQ counts the delivery and dead-letters past the limit),
            # or straight to the dead-letter queue once worker.max_crashes gave up on it
            raise Reject(f"job {job_id}: {reply.error}", requeue=after.state is JobState.QUEUED)
        return after.state.value

    def _state(self, job_id: str) -> str:
        try:
            return self.store.get(job_id).state.value
        except DicomNodeError as exc:
            return str(exc)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """503 only when the database is away (no job can be claimed or recorded); a broker
        outage shows in the body ("degraded"): Celery reconnects by itself, a restart would not help."""
        broker, database = self.broker.ping(), self.store.ping()
        alive = self.executor is not None and self.executor.alive()
        ok = not database
        return ok, {"status": "ok" if ok and not broker else "degraded", "roles": ["worker"], "worker": self.name,
                    "queues": self.queues, "broker": broker or "ok", "database": database or "ok",
                    "running_jobs": self.runner.busy, "pipeline_process_alive": alive}

    def render_metrics(self) -> str:
        self.metrics.set("dicomnode_worker_running_jobs", self.runner.busy, worker=self.name)
        return self.metrics.render()

