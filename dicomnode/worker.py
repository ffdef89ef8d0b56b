"""Runs jobs: takes queued jobs, runs their pipeline in a child process, records the outcome.

Job states (``job.json``)::

    queued → running → dispatching → done
       ↑        ↘ failed            ↘ dead (a destination exhausted its attempts)
       └──────── (the child crashed: a fresh child takes the job again, at most
                  ``worker.max_crashes`` times, then ``failed``)

A job found ``running`` at start (the node was killed) goes back to ``queued``.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dicomnode.config import Config
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.spool import Spool
from dicomnode.worker_child import child_main

__all__ = ["Outcome", "Reply", "Worker", "describe_exit"]

log = logging.getLogger(__name__)

#: Which worker settings each built-in pipeline takes (plug-ins get all of them).
_SETTING_KEYS = {"mri-lln": ("device",), "wsi-two-stage": ("providers",)}


class Outcome(enum.Enum):
    """How one run of a job in the child ended."""

    OK = "ok"
    FAILED = "failed"  # the pipeline reported an error (bad input, model error, …)
    CRASHED = "crashed"  # the child process died (signal, OOM kill, abort)
    TIMED_OUT = "timed_out"  # worker.job_timeout_s passed
    INTERRUPTED = "interrupted"  # the node is shutting down


@dataclass(frozen=True)
class Reply:
    """The parent's typed view of one run (the child sends plain dicts over its pipe)."""

    outcome: Outcome
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def from_child(cls, message: dict[str, Any]) -> Reply:
        if message.get("ok"):
            return cls(Outcome.OK, "", list(message["outputs"]), dict(message["findings"]), float(message["seconds"]))
        return cls(Outcome.FAILED, str(message["error"]))


def describe_exit(exitcode: int | None) -> str:
    """``exit code -11`` → ``signal SIGSEGV``; what an on-call engineer searches for."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class _Child:
    """One warm child process and its pipe."""

    def __init__(self, config: Config) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(child_conn, config.log.format, config.log.level),
                                daemon=False, name="dicomnode-worker")  # pipelines may use process pools
        self.proc.start()
        child_conn.close()

    def alive(self) -> bool:
        return self.proc.is_alive()

    def run(self, request: dict[str, Any], timeout_s: float, stop: threading.Event) -> Reply:
        try:
            self.conn.send(request)
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                return self._died()
            if time.monotonic() > deadline:
                return Reply(Outcome.TIMED_OUT, f"timed out after {timeout_s:.0f} s (worker.job_timeout_s)")
            if stop.is_set():
                return Reply(Outcome.INTERRUPTED, "node shutting down")
        try:
            return Reply.from_child(self.conn.recv())
        except (EOFError, OSError):
            return self._died()

    def _died(self) -> Reply:
        self.proc.join(5)  # the pipe closes a moment before the exit status is known
        return Reply(Outcome.CRASHED, describe_exit(self.proc.exitcode))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Idle child: close its pipe so it returns and exits normally (releasing what its
        libraries hold, e.g. semaphores the resource tracker would report as leaked);
        killed when it does not exit in time."""
        self.conn.close()
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.kill()


class Worker:
    """Worker threads, each driving one child process.

    Parameters
    ----------
    config, spool, metrics
        Node configuration, spool and metrics.
    on_done
        Called with the job id after a job finished (successfully or not).
    """

    def __init__(self, config: Config, spool: Spool, metrics: Metrics, on_done: Callable[[str], None]) -> None:
        self.config, self.spool, self.metrics, self.on_done = config, spool, metrics, on_done
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
        child = _Child(self.config)
        try:
            while not self.stop_event.is_set():
                try:
                    job_id = self.jobs.get(timeout=0.3)
                except queue.Empty:
                    continue
                child = self._run_job(job_id, child)
        finally:
            if self.hard_stop.is_set():
                child.kill()
            else:
                child.stop()

    def _claim(self, job_id: str) -> dict[str, Any] | None:
        """``queued`` → ``running``; None when the job is not queued (taken or cancelled)."""
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            if record.get("state") != "queued":
                return None
            record["state"], record["runs"] = "running", record.get("runs", 0) + 1
            self.spool.write_job(job_id, record)
        return record

    def _fresh(self, child: _Child) -> _Child:
        """A child that died while idle (e.g. killed by the OOM killer) is replaced before
        the next job, so that job never pays for it."""
        if child.alive():
            return child
        log.warning("worker process had died while idle (%s); starting a fresh one", describe_exit(child.proc.exitcode))
        child.kill()
        return _Child(self.config)

    def _run_job(self, job_id: str, child: _Child) -> _Child:
        record = self._claim(job_id)
        if record is None:
            return child
        child = self._fresh(child)
        with bound(job_id=job_id, study_uid=record["study_uid"], series_uid=record["series_uid"]):
            log.info("job started: pipeline %s, model %s, %d instances (run %d)", record["pipeline"],
                     record["model"], record.get("instances", 0), record["runs"])
            self.busy += 1
            try:
                reply = child.run(self._request(job_id, record), self.config.worker.job_timeout_s, self.hard_stop)
            finally:
                self.busy -= 1
            if reply.outcome not in (Outcome.OK, Outcome.FAILED):
                child.kill()  # crashed, hung or interrupted: never reuse it
                child = _Child(self.config)
            self._record(job_id, reply)
        return child

    def _request(self, job_id: str, record: dict[str, Any]) -> dict[str, Any]:
        return {"job_id": job_id, "job_dir": str(self.spool.job_dir(job_id)), "pipeline": record["pipeline"],
                "model_path": record["model_path"], "study_uid": record["study_uid"],
                "series_uid": record["series_uid"], "uid_root": self.config.uid_root,
                "settings": {**self._settings(record["pipeline"]), **self._route_settings(record["route"])}}

    def _route_settings(self, name: str) -> dict[str, Any]:
        """Per-route pipeline settings (``routes[].settings``), e.g. ``{dense: true}``."""
        return next((dict(r.settings) for r in self.config.routes if r.name == name), {})

    def _settings(self, pipeline: str) -> dict[str, Any]:
        """The worker settings a pipeline understands (built-ins reject unknown keys)."""
        every = {"device": self.config.worker.device, "providers": list(self.config.worker.onnx_providers)}
        wanted = _SETTING_KEYS.get(pipeline, tuple(every))
        return {key: every[key] for key in wanted}

    def _record(self, job_id: str, reply: Reply) -> None:
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            again = self._apply(record, reply)
            self.spool.write_job(job_id, record)
        if again:
            self.submit(job_id)  # behind the jobs already waiting: a poison input blocks nobody
        elif reply.outcome is not Outcome.INTERRUPTED:
            self.on_done(job_id)

    def _apply(self, record: dict[str, Any], reply: Reply) -> bool:
        """Write the outcome into ``record``; True when the job goes back to the queue now."""
        if reply.outcome is Outcome.INTERRUPTED:
            record["state"] = "queued"
            log.warning("job interrupted by shutdown; requeued for the next start")
        elif reply.outcome is Outcome.OK:
            record.update(state="dispatching", outputs=reply.outputs, findings=reply.findings,
                          pipeline_seconds=round(reply.seconds, 3), error="")
            self.metrics.observe("dicomnode_pipeline_seconds", reply.seconds, pipeline=record["pipeline"])
            log.info("job finished in %.1f s: %d outputs", reply.seconds, len(reply.outputs))
        elif reply.outcome is Outcome.CRASHED:
            return self._crashed(record, reply.error)
        else:
            record.update(state="failed", error=reply.error)
            log.error("job failed: %s", reply.error)
        return False

    def _crashed(self, record: dict[str, Any], how: str) -> bool:
        """The child died running this job: retry on a fresh child up to ``max_crashes`` times."""
        crashes, limit = record.get("crashes", 0) + 1, self.config.worker.max_crashes
        record["crashes"] = crashes
        self.metrics.inc("dicomnode_worker_crashes_total", pipeline=record["pipeline"])
        if crashes < limit:
            record.update(state="queued", error=f"worker process died ({how}) on run {record['runs']}; "
                                                f"retrying on a fresh worker ({crashes} of {limit} crashes allowed)")
            log.warning("worker process died (%s) running this job; requeued (crash %d of %d)", how, crashes, limit)
            return True
        record.update(state="failed", error=f"worker crashed {crashes} times ({how}); giving up "
                                            f"(worker.max_crashes={limit}); `dicomnode jobs retry` runs it again")
        log.error("job failed: worker crashed %d times (%s)", crashes, how)
        return False
