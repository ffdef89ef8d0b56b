"""Runs jobs: takes queued jobs, runs their pipeline in a child process, records the outcome.

Job states (``job.json``)::

    queued → running → dispatching → done
                    ↘ failed            ↘ dead (a destination exhausted its attempts)

A job found ``running`` at start (the node was killed) goes back to ``queued``.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from dicomnode.config import Config
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.spool import Spool
from dicomnode.worker_child import child_main

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: Which worker settings each built-in pipeline takes (plug-ins get all of them).
_SETTING_KEYS = {"mri-lln": ("device",), "wsi-two-stage": ("providers",)}


class _Child:
    """One warm child process and its pipe."""

    def __init__(self, config: Config) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(child_conn, config.log.format, config.log.level),
                                daemon=False, name="dicomnode-worker")  # pipelines may use process pools
        self.proc.start()
        child_conn.close()

    def run(self, request: dict[str, Any], timeout_s: float, stop: threading.Event) -> dict[str, Any]:
        self.conn.send(request)
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.2):
            if not self.proc.is_alive():
                return {"ok": False, "error": f"worker process died (exit code {self.proc.exitcode})"}
            if time.monotonic() > deadline:
                return {"ok": False, "error": f"timed out after {timeout_s:.0f} s (worker.job_timeout_s)"}
            if stop.is_set():
                return {"ok": False, "requeue": True, "error": "node shutting down"}
        try:
            return dict(self.conn.recv())
        except (EOFError, OSError):
            return {"ok": False, "error": f"worker process died (exit code {self.proc.exitcode})"}

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

    def _run_job(self, job_id: str, child: _Child) -> _Child:
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            if record.get("state") != "queued":
                return child
            record["state"], record["runs"] = "running", record.get("runs", 0) + 1
            self.spool.write_job(job_id, record)
        with bound(job_id=job_id, study_uid=record["study_uid"], series_uid=record["series_uid"]):
            log.info("job started: pipeline %s, model %s, %d instances", record["pipeline"],
                     record["model"], record.get("instances", 0))
            self.busy += 1
            reply = child.run(self._request(job_id, record), self.config.worker.job_timeout_s, self.hard_stop)
            self.busy -= 1
            if not reply["ok"] and ("died" in reply["error"] or "timed out" in reply["error"] or reply.get("requeue")):
                child.kill()
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

    def _record(self, job_id: str, reply: dict[str, Any]) -> None:
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            if reply.get("requeue"):
                record["state"] = "queued"
                log.warning("job interrupted by shutdown; requeued for the next start")
            elif reply["ok"]:
                record.update(state="dispatching", outputs=reply["outputs"], findings=reply["findings"],
                              pipeline_seconds=round(reply["seconds"], 3), error="")
                self.metrics.observe("dicomnode_pipeline_seconds", reply["seconds"], pipeline=record["pipeline"])
                log.info("job finished in %.1f s: %d outputs", reply["seconds"], len(reply["outputs"]))
            else:
                record.update(state="failed", error=reply["error"])
                log.error("job failed: %s", reply["error"])
            self.spool.write_job(job_id, record)
        if not reply.get("requeue"):
            self.on_done(job_id)
