"""Delivers a job's outputs to every destination of its route, with retries.

Per destination the job record keeps ``state`` (pending / sent / dead), ``attempts``,
``last_error``, ``next_at`` and ``history`` (the last attempts: start time, error, the
wait before the next one). A failed send waits ``backoff_s * 2**(attempts-1)`` (capped by
``backoff_max_s``); after ``max_attempts`` the destination is dead-lettered and the job
shows ``dead`` in ``dicomnode jobs`` until ``dicomnode jobs retry`` re-arms it.
Deterministic output UIDs make a re-send harmless: the PACS keeps one copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicomnode.config import Config, Destination
from dicomnode.errors import DicomNodeError, DispatchError
from dicomnode.log import bound
from dicomnode.metrics import Metrics
from dicomnode.net.scu import send_files
from dicomnode.net.stow import stow_files
from dicomnode.spool import Spool, atomic_write

__all__ = ["Dispatcher", "folder_target", "rearm"]

log = logging.getLogger(__name__)

#: Attempts kept per destination in ``history`` (re-armed jobs append to it).
HISTORY_LENGTH = 20


def folder_target(dest: Destination, record: dict[str, Any]) -> Path:
    """``<path>/<StudyUID>/<source SeriesUID>/<pipeline>/`` for a folder destination."""
    assert dest.path is not None
    return dest.path / record["study_uid"] / record["series_uid"] / record["pipeline"]


def _to_folder(dest: Destination, record: dict[str, Any], outputs: Path) -> int:
    target = folder_target(dest, record)
    target.mkdir(parents=True, exist_ok=True)
    names = [*record.get("outputs", []), "findings.json"]
    for name in names:
        atomic_write(target / name, (outputs / name).read_bytes())
    summary = {k: record.get(k) for k in ("job_id", "study_uid", "series_uid", "pipeline", "model",
                                          "model_version", "route", "findings", "outputs")}
    atomic_write(target / "result.json", json.dumps(summary, indent=1).encode())
    (target / "error.json").unlink(missing_ok=True)
    return len(names)


def write_error(dest: Destination, record: dict[str, Any]) -> None:
    """Put a failed job's error next to where its results would have gone."""
    target = folder_target(dest, record)
    target.mkdir(parents=True, exist_ok=True)
    info = {k: record.get(k) for k in ("job_id", "study_uid", "series_uid", "pipeline", "model", "error")}
    atomic_write(target / "error.json", json.dumps(info, indent=1).encode())


def rearm(record: dict[str, Any]) -> bool:
    """Reset dead/pending destinations of a job for another round; ``True`` if any."""
    changed = False
    for state in record.get("destinations", {}).values():
        if state["state"] != "sent":
            state.update(state="pending", attempts=0, next_at=0.0)
            changed = True
    if changed:
        record["state"] = "dispatching"
    return changed


class Dispatcher:
    """Background sender for jobs in state ``dispatching``."""

    def __init__(self, config: Config, spool: Spool, metrics: Metrics) -> None:
        self.config, self.spool, self.metrics = config, spool, metrics
        self.active: set[str] = set()
        self.requeue: Callable[[str], None] = lambda job_id: None  # the node wires worker.submit
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
            for job_id in self.spool.take_requests():
                self._retry_request(job_id)
            with self._lock:
                jobs = sorted(self.active)
            for job_id in jobs:
                if self._stop.is_set():
                    return
                try:
                    self._step(job_id)
                except DicomNodeError as exc:
                    log.error("job %s: cannot dispatch: %s", job_id, exc)
                    self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self.active.discard(job_id)

    def _retry_request(self, job_id: str) -> None:
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            if record.get("state") == "queued":
                log.info("job %s: re-run requested", job_id)
                self.requeue(job_id)
                return
            if record.get("state") in ("dispatching", "dead", "done") and rearm(record):
                self.spool.write_job(job_id, record)
        log.info("job %s: re-send requested", job_id)
        self.add(job_id)

    def _step(self, job_id: str) -> None:
        record = self.spool.read_job(job_id)
        if record.get("state") == "failed":
            self._report_failure(record)
            self._forget(job_id)
            return
        if record.get("state") != "dispatching":
            self._forget(job_id)
            return
        now = time.time()
        for name, state in record["destinations"].items():
            if state["state"] == "pending" and state["next_at"] <= now:
                self._send(job_id, name)
        self._settle(job_id)

    def _report_failure(self, record: dict[str, Any]) -> None:
        for name in record.get("destinations", {}):
            dest = self.config.destinations.get(name)
            if dest is not None and dest.type == "folder":
                write_error(dest, record)

    def _send(self, job_id: str, name: str) -> None:
        record = self.spool.read_job(job_id)
        dest = self.config.destinations.get(name)
        outputs = self.spool.job_dir(job_id) / "outputs"
        with bound(job_id=job_id, study_uid=record["study_uid"], series_uid=record["series_uid"]):
            self.metrics.inc("dicomnode_send_attempts_total", destination=name)
            started = time.time()
            try:
                if dest is None:
                    raise DispatchError(f"destination '{name}' no longer in the config", destination=name)
                sent = self._deliver(dest, record, outputs)
                outcome: dict[str, Any] = {"state": "sent", "last_error": "", "sent_at": time.time()}
                log.info("delivered %d files to %s (%s)", sent, name, dest.type)
            except (DispatchError, OSError) as exc:
                self.metrics.inc("dicomnode_send_failures_total", destination=name)
                outcome = {"last_error": str(exc)}
                log.warning("send to %s failed: %s", name, exc)
            self._update(job_id, name, outcome, started)

    def _deliver(self, dest: Destination, record: dict[str, Any], outputs: Path) -> int:
        if dest.type == "folder":
            return _to_folder(dest, record, outputs)
        files = [outputs / n for n in record.get("outputs", []) if n.endswith(".dcm")]
        if not files:
            return 0
        return send_files(dest, files) if dest.type == "dimse" else stow_files(dest, files)

    def _update(self, job_id: str, name: str, outcome: dict[str, Any], started: float) -> None:
        limits = self.config.dispatch
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            state = record["destinations"][name]
            state["attempts"] += 1
            state.update(outcome)
            attempt: dict[str, Any] = {"at": started, "error": state["last_error"], "retry_in": None}
            state["history"] = [*state.get("history", []), attempt][-HISTORY_LENGTH:]
            if state["state"] != "sent":
                if state["attempts"] >= limits.max_attempts:
                    state["state"] = "dead"
                    log.error("job %s: destination %s dead-lettered after %d attempts: %s (re-send with "
                              "'dicomnode jobs retry %s')", job_id, name, state["attempts"],
                              state["last_error"], job_id)
                else:
                    delay = min(limits.backoff_max_s, limits.backoff_s * 2 ** (state["attempts"] - 1))
                    state["next_at"] = time.time() + delay
                    attempt["retry_in"] = delay
            self.spool.write_job(job_id, record)

    def _settle(self, job_id: str) -> None:
        with self.spool.job_lock(job_id):
            record = self.spool.read_job(job_id)
            states = {s["state"] for s in record["destinations"].values()}
            if "pending" in states:
                return
            record["state"] = "dead" if "dead" in states else "done"
            self.spool.write_job(job_id, record)
        if record["state"] == "done":
            shutil.rmtree(self.spool.job_dir(job_id) / "work", ignore_errors=True)
        self._forget(job_id)
