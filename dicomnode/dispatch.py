"""Delivers a job's outputs to every destination of its route, with retries.

Each destination's :class:`~dicomnode.jobs.Delivery` moves ``pending`` → ``sent``, or
``retrying`` after a failed send (next attempt after ``backoff_s * 2**(attempts-1)``,
capped by ``backoff_max_s``) and ``dead`` after ``max_attempts``; the job then shows
``dead`` in ``dicomnode jobs`` until ``dicomnode jobs retry`` re-arms it (transitions in
:mod:`dicomnode.jobs`). Each delivery keeps the history of its last attempts (start time,
error, the wait before the next one). Deterministic output UIDs make a re-send harmless:
the PACS keeps one copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from dicomnode import jobs
from dicomnode.config import Config, Destination
from dicomnode.errors import DicomNodeError, DispatchError
from dicomnode.jobs import DeliveryState, Job, JobState
from dicomnode.jobstore import JobStore
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.net.scu import send_files
from dicomnode.net.stow import stow_files
from dicomnode.spool import atomic_write

__all__ = ["Dispatcher", "find_results", "folder_target"]

log = logging.getLogger(__name__)


def folder_target(dest: Destination, job: Job) -> Path:
    """``<path>/<StudyUID>/<source SeriesUID>/<pipeline>/`` for a folder destination."""
    if dest.path is None:
        raise DispatchError(f"folder destination '{dest.name}' has no path", destination=dest.name)
    return dest.path / job.study_uid / job.series_uid / job.pipeline


def find_results(root: Path, series_uid: str) -> list[Path]:
    """The ``result.json`` files, then the ``error.json`` files, of a source series under a
    folder destination's ``root`` (the layout of :func:`folder_target`)."""
    return [p for name in ("result.json", "error.json") for p in sorted(root.glob(f"*/{series_uid}/*/{name}"))]


def _to_folder(dest: Destination, job: Job, outputs: Path) -> int:
    target = folder_target(dest, job)
    target.mkdir(parents=True, exist_ok=True)
    names = [*job.outputs, "findings.json"]
    for name in names:
        atomic_write(target / name, (outputs / name).read_bytes())
    summary = {"job_id": job.job_id, "study_uid": job.study_uid, "series_uid": job.series_uid,
               "pipeline": job.pipeline, "model": job.model, "model_version": job.model_version,
               "route": job.route, "findings": dict(job.findings), "outputs": list(job.outputs)}
    atomic_write(target / "result.json", json.dumps(summary, indent=1).encode())
    (target / "error.json").unlink(missing_ok=True)
    return len(names)


def write_error(dest: Destination, job: Job) -> None:
    """Put a failed job's error next to where its results would have gone."""
    target = folder_target(dest, job)
    target.mkdir(parents=True, exist_ok=True)
    info = {"job_id": job.job_id, "study_uid": job.study_uid, "series_uid": job.series_uid,
            "pipeline": job.pipeline, "model": job.model, "error": job.error}
    atomic_write(target / "error.json", json.dumps(info, indent=1).encode())


class Dispatcher:
    """Background sender for jobs in state ``dispatching``.

    Parameters
    ----------
    config, store, metrics
        Node configuration, job store and metrics.
    rerun
        Puts a job back on the worker queue (``dicomnode jobs retry`` of a failed job).
    """

    def __init__(self, config: Config, store: JobStore, metrics: Metrics, rerun: Callable[[str], None]) -> None:
        self.config, self.store, self.metrics, self.rerun = config, store, metrics, rerun
        self.active: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout_s: float) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def add(self, job_id: str) -> None:
        """Consider ``job_id`` (just finished, restored at start, or re-armed)."""
        with self._lock:
            self.active.add(job_id)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._take_requests()
            with self._lock:
                active = sorted(self.active)
            for job_id in active:
                if self._stop.is_set():
                    return
                try:
                    self._step(job_id)
                except DicomNodeError as exc:
                    log.error("job %s: cannot dispatch: %s", job_id, exc)
                    self._forget(job_id)

    def _take_requests(self) -> None:
        try:
            requested = self.store.take_requests()
        except DicomNodeError as exc:  # e.g. the scale-out job database restarting: next round
            log.error("cannot read retry requests: %s", exc)
            return
        for job_id in requested:
            try:
                self._retry_request(job_id)
            except (DicomNodeError, OSError) as exc:  # e.g. a request naming a job that is gone
                log.error("job %s: cannot act on the retry request: %s", job_id, exc)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self.active.discard(job_id)

    def _retry_request(self, job_id: str) -> None:
        """``dicomnode jobs retry`` re-armed the job in the store; pick it up."""
        job = self.store.get(job_id)
        if job.state is JobState.QUEUED:
            log.info("job %s: re-run requested", job_id)
            self.rerun(job_id)
        else:
            log.info("job %s: re-send requested", job_id)
            self.add(job_id)

    def _step(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state is JobState.FAILED:
            self._report_failure(job)
            self._forget(job_id)
            return
        if job.state is not JobState.DISPATCHING:
            self._forget(job_id)
            return
        now = time.time()
        for name, delivery in job.destinations.items():
            if delivery.due(now):
                self._send(job, name)
        self._settle(job_id)

    def _report_failure(self, job: Job) -> None:
        for name in job.destinations:
            dest = self.config.destinations.get(name)
            if dest is not None and dest.type == "folder":
                write_error(dest, job)

    def _send(self, job: Job, name: str) -> None:
        dest = self.config.destinations.get(name)
        outputs = self.store.job_dir(job.job_id) / "outputs"
        with bound(job_id=job.job_id, study_uid=job.study_uid, series_uid=job.series_uid):
            self.metrics.inc("dicomnode_send_attempts_total", destination=name)
            started = time.time()
            try:
                if dest is None:
                    raise DispatchError(f"destination '{name}' no longer in the config", destination=name)
                sent = self._deliver(dest, job, outputs)
            except (DispatchError, OSError) as exc:
                self.metrics.inc("dicomnode_send_failures_total", destination=name)
                log.warning("send to %s failed: %s", name, exc)
                self._failed(job.job_id, name, str(exc), started)
                return
            log.info("delivered %d files to %s (%s)", sent, name, dest.type)
            self.store.change(job.job_id, partial(jobs.delivered, name=name, now=time.time(), started=started))

    def _failed(self, job_id: str, name: str, error: str, started: float) -> None:
        limits = self.config.dispatch
        after = self.store.change(job_id, partial(jobs.delivery_failed, name=name, error=error, now=time.time(),
                                                  max_attempts=limits.max_attempts, backoff_s=limits.backoff_s,
                                                  backoff_max_s=limits.backoff_max_s, started=started))
        delivery = after.destinations[name]
        if delivery.state is DeliveryState.DEAD:
            log.error("job %s: destination %s dead-lettered after %d attempts: %s (re-send with "
                      "'dicomnode jobs retry %s')", job_id, name, delivery.attempts, error, job_id)

    def _deliver(self, dest: Destination, job: Job, outputs: Path) -> int:
        if dest.type == "folder":
            return _to_folder(dest, job, outputs)
        files = [outputs / n for n in job.outputs if n.endswith(".dcm")]
        if not files:
            return 0
        return send_files(dest, files) if dest.type == "dimse" else stow_files(dest, files)

    def _settle(self, job_id: str) -> None:
        job = self.store.change(job_id, jobs.settle)
        if job.state is JobState.DISPATCHING:
            return
        if job.state in (JobState.DONE, JobState.REFUSED):
            shutil.rmtree(self.store.job_dir(job_id) / "work", ignore_errors=True)
        self._forget(job_id)
