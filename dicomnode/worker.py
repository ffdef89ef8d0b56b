"""Runs jobs: worker threads take queued jobs, run them on an executor, record the outcome.

Each worker thread owns one :class:`~dicomnode.executor.Executor` (embedded: a warm
child process) and moves jobs through :mod:`dicomnode.jobs` transitions in the
:class:`~dicomnode.jobstore.JobStore`: ``queued`` → ``running`` → ``dispatching`` or
``failed``; a crashed run goes back to ``queued`` (behind the jobs already waiting) until
``worker.max_crashes``. The state diagram is in :mod:`dicomnode.jobs`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from functools import partial

from dicomnode import jobs
from dicomnode.config import Config
from dicomnode.errors import DicomNodeError, JobStateError
from dicomnode.executor import ChildProcessExecutor, Executor, Outcome, Reply, RunRequest
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import JobStore
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.pipelines import worker_settings

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: Makes the executor of one worker thread.
ExecutorFactory = Callable[[Config], Executor]


def child_process_executor(config: Config) -> Executor:
    """The embedded node's executor: one warm child process per worker thread."""
    return ChildProcessExecutor(config.log.format, config.log.level)


class Worker:
    """Worker threads, each driving one executor.

    Parameters
    ----------
    config, store, metrics
        Node configuration, job store and metrics.
    on_done
        Called with the job id after a job's run ended (outputs to deliver, or a failure
        to report).
    executor
        Makes each thread's executor (default: a warm child process).
    """

    def __init__(self, config: Config, store: JobStore, metrics: Metrics, on_done: Callable[[str], None],
                 executor: ExecutorFactory = child_process_executor) -> None:
        self.config, self.store, self.metrics, self.on_done = config, store, metrics, on_done
        self.make_executor = executor
        self.jobs: queue.Queue[str] = queue.Queue()
        self.stop_event = threading.Event()
        self.hard_stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.busy = 0

    def start(self) -> None:
        for i in range(self.config.worker.concurrency):
            thread = threading.Thread(target=self._loop, name=f"worker-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def submit(self, job_id: str) -> None:
        self.jobs.put(job_id)

    def shutdown(self, drain_timeout_s: float) -> None:
        """Stop taking jobs; let running ones finish within the timeout, else requeue them."""
        self.stop_event.set()
        deadline = time.monotonic() + drain_timeout_s
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if any(t.is_alive() for t in self.threads):
            self.hard_stop.set()
            for thread in self.threads:
                thread.join(10)

    def _loop(self) -> None:
        executor = self.make_executor(self.config)
        try:
            while not self.stop_event.is_set():
                try:
                    job_id = self.jobs.get(timeout=0.3)
                except queue.Empty:
                    continue
                try:
                    self._run_job(job_id, executor)
                except DicomNodeError as exc:  # e.g. an unreadable job.json: that job only
                    log.error("job %s: cannot run it: %s", job_id, exc)
        finally:
            executor.close(hard=self.hard_stop.is_set())

    def _claim(self, job_id: str) -> Job | None:
        """``queued`` → ``running``; None when the job is not queued (taken or re-armed)."""
        try:
            return self.store.change(job_id, jobs.start_run)
        except JobStateError:
            return None

    def _run_job(self, job_id: str, executor: Executor) -> None:
        ran = self.run_one(job_id, executor)
        if ran is None:
            return
        after, reply = ran
        if after.state is JobState.QUEUED and reply.outcome is Outcome.CRASHED:
            self.submit(job_id)  # behind the jobs already waiting: a poison input blocks nobody
        elif reply.outcome is not Outcome.INTERRUPTED:
            self.on_done(job_id)

    def run_one(self, job_id: str, executor: Executor) -> tuple[Job, Reply] | None:
        """Claim the queued job, run it on ``executor`` and record the outcome; returns the
        job after it and the reply, or ``None`` when the job was not queued (taken already)."""
        job = self._claim(job_id)
        if job is None:
            return None
        with bound(job_id=job_id, study_uid=job.study_uid, series_uid=job.series_uid):
            log.info("job started: pipeline %s, model %s, %d instances (run %d)", job.pipeline, job.model,
                     job.instances, job.runs)
            self.busy += 1
            try:
                reply = executor.run(self._request(job), self.config.worker.job_timeout_s, self.hard_stop)
            finally:
                self.busy -= 1
            after = self.store.change(job.job_id, partial(self._transition, reply))
            self._report(after, reply)
        return after, reply

    def _request(self, job: Job) -> RunRequest:
        every = {"device": self.config.worker.device, "providers": list(self.config.worker.onnx_providers)}
        found = next((r for r in self.config.routes if r.name == job.route), None)
        route = dict(found.settings) if found else {}
        return RunRequest(job_id=job.job_id, job_dir=str(self.store.job_dir(job.job_id)), pipeline=job.pipeline,
                          model_path=job.model_path, study_uid=job.study_uid, series_uid=job.series_uid,
                          uid_root=self.config.uid_root, settings={**worker_settings(job.pipeline, every), **route},
                          on_refused=found.on_refused if found else "report")

    def _transition(self, reply: Reply, job: Job) -> Job:
        if reply.outcome is Outcome.DONE:
            return jobs.finish_run(job, reply.outputs, reply.findings, reply.seconds)
        if reply.outcome is Outcome.REFUSED:
            return jobs.refuse(job, reply.error, reply.outputs, reply.findings, reply.seconds)
        if reply.outcome is Outcome.CRASHED:
            return jobs.crashed(job, reply.error, self.config.worker.max_crashes)
        if reply.outcome is Outcome.INTERRUPTED:
            return jobs.interrupt(job)
        return jobs.fail(job, reply.error)

    def _report(self, job: Job, reply: Reply) -> None:
        """Log and count what happened (the record already says it)."""
        if reply.outcome is Outcome.DONE:
            self.metrics.observe("dicomnode_pipeline_seconds", reply.seconds, pipeline=job.pipeline)
            log.info("job finished in %.1f s: %d outputs", reply.seconds, len(reply.outputs))
        elif reply.outcome is Outcome.REFUSED:
            verdicts = reply.findings.get("input", {}).get("verdicts", [])
            for requirement in dict.fromkeys(v["requirement"] for v in verdicts if not v["passed"]):
                self.metrics.inc("dicomnode_jobs_refused_total", route=job.route, reason=requirement)
            log.warning("job refused (%s): %s", "report" if job.outputs else "silent", job.refusal)
        elif reply.outcome is Outcome.INTERRUPTED:
            log.warning("job interrupted by shutdown; requeued for the next start")
        elif reply.outcome is Outcome.CRASHED:
            self.metrics.inc("dicomnode_worker_crashes_total", pipeline=job.pipeline)
            if job.state is JobState.QUEUED:
                log.warning("worker process died (%s) running this job; requeued (crash %d of %d)", reply.error,
                            job.crashes, self.config.worker.max_crashes)
            else:
                log.error("job failed: %s", job.error)
        else:
            log.error("job failed: %s", reply.error)
