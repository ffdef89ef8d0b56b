"""What runs a job: the :class:`Executor` seam, its typed messages, and the warm child process.

The worker asks an executor to run one :class:`RunRequest` and gets one :class:`Reply`
whose :class:`Outcome` says what happened; nothing reads error text to decide. The
embedded node's executor is :class:`ChildProcessExecutor`: one ``spawn``-ed child process
that keeps pipelines warm (models loaded once) and is replaced, never reused, after it
crashed, hung or was interrupted. A scale-out executor (a task queue) implements the same
:meth:`Executor.run`.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ChildProcessExecutor", "Executor", "Outcome", "Reply", "RunRequest", "describe_exit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """Everything a worker process needs to run one job (identifiers and paths, no pixels)."""

    job_id: str
    job_dir: str
    pipeline: str
    model_path: str
    study_uid: str
    series_uid: str
    uid_root: str
    settings: dict[str, Any] = field(default_factory=dict)
    on_refused: str = "report"  # the route's on_refused: "report" (a "not analysed" SR) or "silent"


class Outcome(enum.Enum):
    """How one run of a job ended."""

    DONE = "done"  # outputs written
    FAILED = "failed"  # the pipeline reported an error (bad input, model error, …)
    REFUSED = "refused"  # the guard refused the input (outside the model's requirements)
    CRASHED = "crashed"  # the process running it died (signal, OOM kill, abort)
    TIMED_OUT = "timed_out"  # worker.job_timeout_s passed
    INTERRUPTED = "interrupted"  # the node is shutting down: run it again at the next start


@dataclass(frozen=True)
class Reply:
    """The result of one run. ``error`` says what happened for every outcome but ``DONE``
    (for ``CRASHED``: how the process ended, e.g. ``signal SIGSEGV``; for ``REFUSED``: every
    failed requirement, and ``outputs`` holds the "not analysed" report, if any)."""

    outcome: Outcome
    error: str = ""
    outputs: list[str] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Executor(Protocol):
    """Runs jobs one at a time for one worker thread."""

    def run(self, request: RunRequest, timeout_s: float, stop: threading.Event) -> Reply:
        """Run ``request``; give up with ``TIMED_OUT`` after ``timeout_s``, ``INTERRUPTED`` on ``stop``."""

    def close(self, hard: bool) -> None:
        """Release the executor (``hard``: kill whatever still runs)."""


def describe_exit(exitcode: int | None) -> str:
    """``-11`` → ``signal SIGSEGV``: what an on-call engineer searches for."""
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

    def __init__(self, log_format: str, log_level: str) -> None:
        from dicomnode.worker_child import child_main  # noqa: PLC0415 - the child's imports stay in the child

        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(child_conn, log_format, log_level),
                                daemon=False, name="dicomnode-worker")  # pipelines may use process pools
        self.proc.start()
        child_conn.close()

    def run(self, request: RunRequest, timeout_s: float, stop: threading.Event) -> Reply:
        try:
            self.conn.send(request)
        except OSError:  # BrokenPipeError: it died between jobs
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
            reply = self.conn.recv()
        except (EOFError, OSError):
            return self._died()
        assert isinstance(reply, Reply), reply
        return reply

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


class ChildProcessExecutor:
    """:class:`Executor` on one warm child process, replaced whenever it cannot be trusted.

    Parameters
    ----------
    log_format, log_level
        The child's logging (``log.format``, ``log.level``).
    """

    def __init__(self, log_format: str, log_level: str) -> None:
        self._log = (log_format, log_level)
        self._child = _Child(*self._log)

    def run(self, request: RunRequest, timeout_s: float, stop: threading.Event) -> Reply:
        self._replace_if_dead()
        reply = self._child.run(request, timeout_s, stop)
        if reply.outcome not in (Outcome.DONE, Outcome.FAILED, Outcome.REFUSED):
            self._child.kill()  # crashed, hung or interrupted: never reuse it
            self._child = _Child(*self._log)
        return reply

    def alive(self) -> bool:
        """Whether the warm child process is running (for ``/healthz``)."""
        return bool(self._child.proc.is_alive())

    def _replace_if_dead(self) -> None:
        """A child that died while idle (e.g. the OOM killer) is replaced before the next
        job, so that job never pays for it."""
        if self._child.proc.is_alive():
            return
        log.warning("worker process had died while idle (%s); starting a fresh one",
                    describe_exit(self._child.proc.exitcode))
        self._child.kill()
        self._child = _Child(*self._log)

    def close(self, hard: bool) -> None:
        if hard:
            self._child.kill()
        else:
            self._child.stop()
