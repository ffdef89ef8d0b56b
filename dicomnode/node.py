"""Composition root and lifecycle of a running node: ``start()``, ``serve()``, ``shutdown()``.

scp → spool → assembler → routing → worker → dispatch, each a module; this file wires
them from one :class:`~dicomnode.config.Config` and rebuilds state from the spool at start.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from typing import Any

from dicomnode.assembler import Assembler
from dicomnode.config import Config
from dicomnode.dicom.headers import read_info
from dicomnode.dispatch import Dispatcher
from dicomnode.errors import DicomNodeError
from dicomnode.http_status import StatusServer
from dicomnode.inference.manifest import load_bundle
from dicomnode.intake import Intake
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import FileJobStore
from dicomnode.metrics import Metrics
from dicomnode.net.scp import StorageSCP, StoredInstance
from dicomnode.pipelines import bundle_problem, route_problem
from dicomnode.spool import Spool

__all__ = ["Node", "check_routes"]

log = logging.getLogger(__name__)


def check_routes(config: Config) -> dict[str, str]:
    """Route name → problem ("" when usable): pipeline exists, model bundle verifies."""
    problems: dict[str, str] = {}
    for route in config.routes:
        problem = route_problem(route.pipeline, route.model, None)
        if not problem:
            try:
                bundle = load_bundle(config.models[route.model].path)
                problem = route_problem(route.pipeline, route.model, bundle.task) or \
                    bundle_problem(route.pipeline, bundle)
            except DicomNodeError as exc:
                problem = str(exc)
        problems[route.name] = problem
    return problems


class Node:
    """A running dicomnode. Build, :meth:`start`, then :meth:`serve` (blocks)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        shared = config.node.receivers > 1
        self.spool = Spool(config.spool.path, config.spool.sync, shared=shared)
        self.store = FileJobStore(self.spool)
        self.assembler = Assembler(config.assembly.quiet_s, config.assembly.max_wait_s)
        self.intake = Intake(config, self.spool, self.store, self.metrics)
        from dicomnode.worker import Worker  # noqa: PLC0415 - keeps multiprocessing out of imports
        self.worker = Worker(config, self.store, self.metrics, self._run_ended)
        self.dispatcher = Dispatcher(config, self.store, self.metrics, rerun=self.worker.submit)
        self.scp = StorageSCP(config, self.spool, self.metrics, self._stored, reuse_port=shared)
        self.receivers: Any = None
        if shared:
            from dicomnode.receivers import ReceiverPool  # noqa: PLC0415 - multiprocessing only when used
            self.receivers = ReceiverPool(config, self.metrics, self._stored_elsewhere)
        self.http: StatusServer | None = None
        self.route_problems: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.port = 0
        self._ticker = threading.Thread(target=self._tick_loop, name="assembler", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Rebuild state from the spool, then start every stage and the listener last."""
        log.info("starting dicomnode: %s", self.config.summary())
        self.route_problems = self.intake.problems = check_routes(self.config)
        for name, problem in self.route_problems.items():
            if problem:
                log.error("route %s disabled: %s (matching series will fail with this reason)", name, problem)
        removed = self.spool.clean_tmp()
        if removed:
            log.warning("removed %d half-written temp files from an earlier crash", removed)
        self._restore_incoming()
        self._restore_jobs()
        self.worker.start()
        self.dispatcher.start()
        self._ticker.start()
        if self.config.http.port:
            self.http = StatusServer(self.config.http.host, self.config.http.port, self.health,
                                     self.render_metrics)
            self.http.start()
        self.port = self.scp.start()
        if self.receivers is not None:
            self.receivers.start(self.port)

    def serve(self, drain_timeout_s: float = 30.0) -> None:
        """Block until SIGINT/SIGTERM (main thread) or :meth:`request_stop`; then drain."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
        self.stop_event.wait()
        self.shutdown(drain_timeout_s)

    def request_stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_event.is_set():
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("signal %s: draining (send again to force exit)", signal.Signals(signum).name)
        self.stop_event.set()

    def shutdown(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting associations, finish or requeue jobs, stop sending, exit."""
        self.stop_event.set()
        self.scp.stop()
        if self.receivers is not None:
            self.receivers.stop()
        if not self.worker.threads:  # start() failed before the worker ran
            return
        self.worker.shutdown(drain_timeout_s)
        self.dispatcher.shutdown(10.0)
        if self.http is not None:
            self.http.stop()
        log.info("stopped; %d series still assembling are kept in the spool", self.assembler.pending())

    # -- stages -------------------------------------------------------------------------
    def _run_ended(self, job_id: str) -> None:
        self.dispatcher.add(job_id)

    def _stored(self, stored: StoredInstance) -> None:
        self.assembler.add(stored.info)

    def _stored_elsewhere(self, stored: StoredInstance) -> None:
        """An instance a receiver process spooled: assembled like our own, unless its series
        has already been moved into a job (the file went with it)."""
        info = stored.info
        with self.spool.series_lock(info.series_uid):
            if (self.spool.incoming_dir(info.series_uid) / f"{info.sop_instance_uid}.dcm").exists():
                self.assembler.add(info)

    def _tick_loop(self) -> None:
        last_expiry = 0.0
        while not self.stop_event.wait(0.25):
            if self.receivers is not None:
                self.receivers.check()
            for series_uid, reason in self.assembler.due():
                try:
                    self._complete(series_uid, reason)
                except (DicomNodeError, OSError) as exc:
                    log.error("series %s: could not queue a job: %s", series_uid, exc)
            if time.monotonic() - last_expiry > 3600:
                last_expiry = time.monotonic()
                self.spool.expire(self.config.spool.retention_days * 86400)
                self.store.expire(self.config.spool.retention_days * 86400)

    def _complete(self, series_uid: str, reason: str) -> None:
        job = self.intake.complete(series_uid, reason, locked=lambda: self.assembler.discard(series_uid))
        if job is not None:
            self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        if job.state is JobState.FAILED:
            self.dispatcher.add(job.job_id)
        else:
            self.worker.submit(job.job_id)

    # -- restart ------------------------------------------------------------------------
    def _restore_incoming(self) -> None:
        for series_uid in self.spool.incoming_series():
            folder = self.spool.incoming_dir(series_uid)
            files = list(folder.glob("*.dcm"))
            if not files:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            infos = [read_info(f)[0] for f in files]
            age = max(0.0, time.time() - max(f.stat().st_mtime for f in files))
            self.assembler.restore(series_uid, infos, age)
            log.info("series %s: %d instances restored from the spool, still assembling", series_uid, len(files))

    def _restore_jobs(self) -> None:
        found = self.store.recover(self.intake.job_for)
        for job_id in found.to_run:
            self.worker.submit(job_id)
        for job_id in found.to_dispatch:
            self.dispatcher.add(job_id)

    # -- observability ------------------------------------------------------------------
    def job_states(self) -> dict[str, int]:
        return self.store.counts()

    def render_metrics(self) -> str:
        counts = self.job_states()
        for name in [*(s.value for s in JobState), *counts]:
            self.metrics.set("dicomnode_jobs", counts.get(name, 0), state=name)
        self.metrics.set("dicomnode_series_assembling", self.assembler.pending())
        return self.metrics.render()

    def health(self) -> tuple[bool, dict[str, Any]]:
        listening = self.scp.server is not None
        workers = all(t.is_alive() for t in self.worker.threads)
        free = self.spool.free_mb()
        ok = listening and workers and free >= self.config.spool.min_free_mb
        return ok, {"status": "ok" if ok else "degraded", "listening": listening, "dicom_port": self.port,
                    "ae_title": self.config.node.ae_title, "workers_alive": workers,
                    "spool_free_mb": round(free), "series_assembling": self.assembler.pending(),
                    "routes_disabled": {k: v for k, v in self.route_problems.items() if v}}
