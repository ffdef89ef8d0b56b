"""The receiver and dispatcher roles of the scale-out mode (``executor.kind: celery``).

- **receiver**: the DICOM SCP. Each acknowledged instance is durable on the shared spool
  *and* recorded in the series ledger (PostgreSQL) before the answer; a database that
  cannot be reached makes the answer ``0xA700`` so the sender retries. A claim loop turns
  complete series into jobs (exactly one receiver per series) and publishes the outbox.
- **dispatcher**: delivers outputs and reports failures of the jobs the workers finished
  (the store's ``dicomnode_to_dispatch`` notes), marks dead-lettered jobs ``failed``, acts
  on ``dicomnode jobs retry`` and publishes the outbox too.

Workers are :mod:`dicomnode.scaleout.worker_role` (a Celery worker). Every role serves
``/healthz`` (with its broker and database connections) and ``/metrics``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from functools import partial
from typing import Any

from dicomnode import jobs
from dicomnode.config import Config
from dicomnode.dispatch import Dispatcher
from dicomnode.errors import DicomNodeError, IngestError
from dicomnode.http_status import StatusServer
from dicomnode.intake import Intake
from dicomnode.jobs import JobState
from dicomnode.jobstore_pg import open_ledger
from dicomnode.metrics import Metrics
from dicomnode.net import status as st
from dicomnode.net.scp import StorageSCP, StoredInstance
from dicomnode.node import check_routes
from dicomnode.scaleout.broker import Broker
from dicomnode.scaleout.series import SeriesLedger
from dicomnode.spool import Spool

__all__ = ["ScaleNode"]

log = logging.getLogger(__name__)

#: A temp file untouched this long on the shared spool is a leftover of a dead receiver.
_TMP_STALE_S = 3600.0
#: How often a receiver looks for series folders the ledger does not know (see :meth:`ScaleNode._adopt`).
_ADOPT_EVERY_S = 30.0
#: A job still half-made after this long was left by a crashed receiver (making one takes milliseconds).
_HALF_MADE_AFTER_S = 120.0
#: How often a dispatcher reads the dead-letter queue (a broker connection each time).
_DEAD_LETTERS_EVERY_S = 5.0


def _due(next_at: dict[str, float], what: str, now: float, every_s: float) -> bool:
    """Whether ``what`` is due at ``now``; if so it is next due ``every_s`` later."""
    if now < next_at[what]:
        return False
    next_at[what] = now + every_s
    return True


class ScaleNode:
    """Receiver and/or dispatcher roles in one process. :meth:`start`, then :meth:`serve`."""

    def __init__(self, config: Config, roles: set[str]) -> None:
        self.config, self.roles = config, roles
        self.metrics = Metrics()
        self.spool = Spool(config.spool.path, config.spool.sync, shared=True)
        self.store = open_ledger(config, self.spool)
        self.series = SeriesLedger(self.store)
        self.broker = Broker(config)
        self.intake = Intake(config, self.spool, self.store, self.metrics)
        self.scp: StorageSCP | None = None
        if "receiver" in roles:
            self.scp = StorageSCP(config, self.spool, self.metrics, lambda _: None, reuse_port=True,
                                  after_stored=self._seen)
        self.dispatcher: Dispatcher | None = None
        if "dispatcher" in roles:
            self.dispatcher = Dispatcher(config, self.store, self.metrics, rerun=lambda _: None)
        self.http: StatusServer | None = None
        self.stop_event = threading.Event()
        self.port = 0
        self._loop = threading.Thread(target=self._run_loop, name="scale-out", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        log.info("starting dicomnode scale-out roles %s: %s", ",".join(sorted(self.roles)), self.config.summary())
        self.broker.declare()
        self.intake.problems = check_routes(self.config)
        for name, problem in self.intake.problems.items():
            if problem:
                log.error("route %s disabled: %s (matching series will fail with this reason)", name, problem)
        removed = self.spool.clean_tmp(older_than_s=_TMP_STALE_S)
        if removed:
            log.warning("removed %d stale temp files (untouched for %.0f s)", removed, _TMP_STALE_S)
        if self.dispatcher is not None:
            for job_id in self.store.ids_in(JobState.DISPATCHING):
                self.dispatcher.add(job_id)
            self.dispatcher.start()
        self._loop.start()
        if self.config.http.port:
            self.http = StatusServer(self.config.http.host, self.config.http.port, self.health, self.render_metrics)
            self.http.start()
        if self.scp is not None:
            self.port = self.scp.start()

    def serve(self, drain_timeout_s: float = 30.0) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.stop_event.wait()
        self.shutdown(drain_timeout_s)

    def request_stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, drain_timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        if self.scp is not None:
            self.scp.stop()
        if self._loop.is_alive():
            self._loop.join(drain_timeout_s)
        if self.dispatcher is not None:
            self.dispatcher.shutdown(10.0)
        if self.http is not None:
            self.http.stop()
        self.store.close()
        log.info("stopped")

    # -- receiver -----------------------------------------------------------------------
    def _seen(self, stored: StoredInstance) -> None:
        try:
            self.series.seen(stored.info.series_uid)
        except DicomNodeError as exc:
            raise IngestError(f"cannot record the series in the job database, send again later: {exc}",
                              st.OUT_OF_RESOURCES) from exc

    def _adopt(self) -> None:
        """What a killed receiver left: series folders the ledger does not know (it died
        between spooling an instance and recording it, or the database refused the record)
        are recorded; jobs it left half-made (staged, or row not committed) are finished."""
        for series_uid in self.spool.incoming_series():
            self.series.adopt(series_uid)
        finished = self.store.finish_half_made(self.intake.job_for, older_than_s=_HALF_MADE_AFTER_S)
        if finished:
            log.warning("finished %d jobs a crashed receiver had left half-made", finished)

    # -- one loop for both roles ----------------------------------------------------------
    def _run_loop(self) -> None:
        """Dispatch notes every 0.1 s (a finished job is delivered at once); claims and the
        outbox every ``executor.claim_interval_s``; dead letters every 5 s; orphans every 30 s."""
        ex, next_at = self.config.executor, {"claim": 0.0, "dead": 0.0, "adopt": 0.0}
        while not self.stop_event.wait(0.1 if self.dispatcher is not None else ex.claim_interval_s):
            now = time.monotonic()
            try:
                if self.dispatcher is not None:
                    for job_id in self.store.take_to_dispatch():
                        self.dispatcher.add(job_id)
                    if _due(next_at, "dead", now, _DEAD_LETTERS_EVERY_S):
                        self._drain_dead_letters()
                if self.scp is not None and _due(next_at, "adopt", now, _ADOPT_EVERY_S):
                    self._adopt()
                if _due(next_at, "claim", now, ex.claim_interval_s):
                    if self.scp is not None:
                        self.series.claim_due(self.config.assembly.quiet_s, self.config.assembly.max_wait_s,
                                              self.intake.complete)
                    self.store.publish_due(self.broker.publish)
            except DicomNodeError as exc:  # database or broker away: said once per round, retried
                log.error("scale-out loop: %s", exc)

    def _drain_dead_letters(self) -> None:
        try:
            self.broker.drain_dead_letters(self._dead_lettered)
        except Exception as exc:  # noqa: BLE001 - broker down: the dead letters wait in RabbitMQ
            log.warning("cannot read the dead-letter queue %s: %s", self.config.executor.dead_letter_queue, exc)

    def _dead_lettered(self, job_id: str, deliveries: int) -> None:
        try:
            job = self.store.change(job_id, partial(jobs.dead_lettered, deliveries=deliveries))
        except DicomNodeError as exc:
            log.error("dead-lettered job %s: %s", job_id, exc)
            return
        if not job.error.startswith("dead-lettered"):  # failed before (worker.max_crashes): said already
            return
        self.metrics.inc("dicomnode_jobs_dead_lettered_total", pipeline=job.pipeline)
        log.error("job %s dead-lettered after %d deliveries: %s", job_id, deliveries, job.error)

    # -- observability ------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """503 when the database is away (a receiver then refuses instances) or the SCP is
        not listening; a broker outage is "degraded" with 200: receivers keep accepting and
        publish later, dispatchers keep delivering, so a probe must not take them out."""
        broker, database = self.broker.ping(), self.store.ping()
        details: dict[str, Any] = {"roles": sorted(self.roles), "broker": broker or "ok", "database": database or "ok"}
        ok = not database
        if self.scp is not None:
            listening = self.scp.server is not None
            details.update(listening=listening, dicom_port=self.port, ae_title=self.config.node.ae_title)
            ok = ok and listening
        details["status"] = "ok" if ok and not broker else "degraded"
        return ok, details

    def render_metrics(self) -> str:
        try:
            counts = self.store.counts()
            for name in [*(s.value for s in JobState), *counts]:
                self.metrics.set("dicomnode_jobs", counts.get(name, 0), state=name)
            self.metrics.set("dicomnode_series_assembling", self.series.pending())
            self.metrics.set("dicomnode_outbox_jobs", self.store.outbox_size())
        except DicomNodeError as exc:
            log.warning("metrics: job database: %s", exc)
        try:
            for queue, depth in self.broker.depths().items():
                self.metrics.set("dicomnode_queue_messages", depth, queue=queue)
        except Exception as exc:  # noqa: BLE001 - broker down: the other metrics still render
            log.warning("metrics: broker: %s", exc)
        return self.metrics.render()
