"""The job record and its state machine: the one home of job and delivery states.

A job is one completed series run through one route. Its record (``job.json`` in the
file spool) is a :class:`Job`; every change is a pure function here that returns a new
record or raises :class:`~dicomnode.errors.JobStateError` for an illegal transition.
Nothing outside this module writes a job's fields by hand.

Job states::

    queued ──start_run──► running ──finish_run──► dispatching ──settle──► done (refused, when
      ▲                     │ │ │                   ▲    │                the outputs are a
      │  crashed (< max) ◄──┘ │ └─refuse (report)───┘    │                "not analysed" report)
      │  interrupt, recover ◄─┤                          └──settle──► dead (a destination
      │                       ├─refuse (silent)──► refused               exhausted its attempts)
      │                       └─fail / crashed (max)──► failed
      └── retry (failed, refused)      retry (dead, dispatching) ──► dispatching

A job whose route is disabled is created ``failed``. A job whose input the guard refused
(outside the model's requirements) ends ``refused`` with the reason in ``refusal``: at
once when its route is ``on_refused: silent``, else after its "not analysed" report was
delivered. ``dicomnode jobs retry`` runs a failed or refused job again with a fresh crash
count, and re-arms the destinations not yet sent of a dead or dispatching job.

Delivery states, per destination::

    pending ──sent──► sent
       │ ▲
       ▼ │ next attempt due (backoff_s · 2^(attempts-1), capped by backoff_max_s)
    retrying ──attempts = max_attempts──► dead ──rearm──► pending
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dicomnode.errors import JobStateError

__all__ = [
    "HISTORY_LENGTH",
    "SCHEMA",
    "Attempt",
    "Delivery",
    "DeliveryState",
    "Job",
    "JobState",
    "crashed",
    "dead_lettered",
    "delivery_failed",
    "delivered",
    "fail",
    "finish_run",
    "interrupt",
    "lost_worker",
    "new_job",
    "recover",
    "refuse",
    "retry",
    "settle",
    "start_run",
]

#: Version of the job record's JSON schema (``job.json`` written before it had one is 0).
SCHEMA = 1


class JobState(enum.StrEnum):
    """Where a job is; the values are what ``job.json``, logs and metrics show."""

    QUEUED = "queued"
    RUNNING = "running"
    DISPATCHING = "dispatching"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    REFUSED = "refused"

    @property
    def ended(self) -> bool:
        """Nothing more happens to the job unless someone asks for a retry."""
        return self in (JobState.DONE, JobState.FAILED, JobState.DEAD, JobState.REFUSED)


class DeliveryState(enum.StrEnum):
    """Where the delivery of a job's outputs to one destination is."""

    PENDING = "pending"
    RETRYING = "retrying"
    SENT = "sent"
    DEAD = "dead"

    @property
    def open(self) -> bool:
        """A send is still to be attempted."""
        return self in (DeliveryState.PENDING, DeliveryState.RETRYING)


#: Attempts kept per destination in :attr:`Delivery.history` (re-armed jobs append to it).
HISTORY_LENGTH = 20


@dataclass(frozen=True)
class Attempt:
    """One send: when it started, what went wrong ("" if nothing), the wait before the next."""

    at: float
    error: str = ""
    retry_in: float | None = None


@dataclass(frozen=True)
class Delivery:
    """The outputs of one job to one destination."""

    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_error: str = ""
    next_at: float = 0.0
    sent_at: float = 0.0
    history: tuple[Attempt, ...] = ()

    def logged(self, attempt: Attempt) -> tuple[Attempt, ...]:
        return (*self.history, attempt)[-HISTORY_LENGTH:]

    def due(self, now: float) -> bool:
        return self.state.open and self.next_at <= now


@dataclass(frozen=True)
class Job:
    """One job record (``job.json``); build with :func:`new_job`, change with the transitions."""

    job_id: str
    state: JobState
    route: str
    pipeline: str
    model: str
    model_path: str
    model_version: str
    study_uid: str
    series_uid: str
    instances: int
    created: float
    destinations: Mapping[str, Delivery]
    runs: int = 0
    crashes: int = 0
    error: str = ""
    outputs: tuple[str, ...] = ()
    findings: Mapping[str, Any] = field(default_factory=dict)
    pipeline_seconds: float = 0.0
    refusal: str = ""
    updated: float = 0.0
    schema: int = SCHEMA

    # -- JSON --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as ``job.json`` holds it (enums as their values)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["outputs"] = list(self.outputs)
        data["destinations"] = {n: {**asdict(d), "state": d.state.value, "history": [asdict(a) for a in d.history]}
                                for n, d in self.destinations.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        """Read a record; tolerant of records written before the schema (``schema`` 0).

        Raises
        ------
        JobStateError
            The record is not a job record (unknown state, missing field).
        """
        try:
            known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
            known["state"] = JobState(data["state"])
            known["outputs"] = tuple(data.get("outputs", ()))
            known["findings"] = dict(data.get("findings") or {})
            known["destinations"] = {n: _delivery(d) for n, d in dict(data.get("destinations", {})).items()}
            known.setdefault("schema", 0)
            return cls(**known)
        except (KeyError, TypeError, ValueError) as exc:
            raise JobStateError(f"not a job record ({exc!r}): {json.dumps(dict(data), default=str)[:200]}") from exc

    def ended_deliveries(self) -> bool:
        return not any(d.state.open for d in self.destinations.values())


def _delivery(data: Mapping[str, Any]) -> Delivery:
    state = DeliveryState(data["state"])
    if state is DeliveryState.PENDING and int(data.get("attempts", 0)) > 0:
        state = DeliveryState.RETRYING  # schema 0 kept failed attempts in "pending"
    history = tuple(Attempt(float(a["at"]), str(a.get("error", "")), a.get("retry_in"))
                    for a in data.get("history", ()))
    return Delivery(state, int(data.get("attempts", 0)), str(data.get("last_error", "")),
                    float(data.get("next_at", 0.0)), float(data.get("sent_at", 0.0)), history)


def new_job(job_id: str, *, route: str, pipeline: str, model: str, model_path: str, model_version: str,
            study_uid: str, series_uid: str, instances: int, destinations: list[str], created: float,
            problem: str = "") -> Job:
    """A new job: ``queued``, or ``failed`` at once when its route is disabled (``problem``)."""
    return Job(job_id=job_id, state=JobState.FAILED if problem else JobState.QUEUED, route=route,
               pipeline=pipeline, model=model, model_path=model_path, model_version=model_version,
               study_uid=study_uid, series_uid=series_uid, instances=instances, created=created,
               destinations={d: Delivery() for d in destinations},
               error=f"route {route} disabled: {problem}" if problem else "")


def _require(job: Job, action: str, *states: JobState) -> None:
    if job.state not in states:
        allowed = ", ".join(s.value for s in states)
        raise JobStateError(f"job {job.job_id}: cannot {action} a job in state {job.state.value} (only {allowed})",
                            job_id=job.job_id)


# -- running --------------------------------------------------------------------------
def start_run(job: Job) -> Job:
    """A worker takes the job: ``queued`` → ``running``, one more run."""
    _require(job, "start", JobState.QUEUED)
    return replace(job, state=JobState.RUNNING, runs=job.runs + 1)


def finish_run(job: Job, outputs: list[str], findings: Mapping[str, Any], seconds: float) -> Job:
    """The pipeline produced its outputs: ``running`` → ``dispatching``."""
    _require(job, "finish", JobState.RUNNING)
    return replace(job, state=JobState.DISPATCHING, outputs=tuple(outputs), findings=dict(findings),
                   pipeline_seconds=round(seconds, 3), error="", refusal="")


def refuse(job: Job, reason: str, outputs: list[str], findings: Mapping[str, Any], seconds: float) -> Job:
    """The guard refused the input (``reason``): ``running`` → ``dispatching`` to deliver the
    "not analysed" report in ``outputs``, or ``refused`` at once when there is none (silent)."""
    _require(job, "refuse", JobState.RUNNING)
    state = JobState.DISPATCHING if outputs and job.destinations else JobState.REFUSED
    return replace(job, state=state, outputs=tuple(outputs), findings=dict(findings),
                   pipeline_seconds=round(seconds, 3), error="", refusal=reason)


def fail(job: Job, error: str) -> Job:
    """The pipeline reported an error or timed out: ``running`` → ``failed``."""
    _require(job, "fail", JobState.RUNNING)
    return replace(job, state=JobState.FAILED, error=error)


def crashed(job: Job, how: str, max_crashes: int) -> Job:
    """The worker process died running the job (``how``: e.g. ``signal SIGSEGV``).

    Back to ``queued`` for a fresh worker while fewer than ``max_crashes`` runs crashed,
    else ``failed`` with "worker crashed N times (…)".
    """
    _require(job, "record a crash of", JobState.RUNNING)
    count = job.crashes + 1
    if count < max_crashes:
        return replace(job, state=JobState.QUEUED, crashes=count,
                       error=f"worker process died ({how}) on run {job.runs}; retrying on a fresh worker "
                             f"({count} of {max_crashes} crashes allowed)")
    return replace(job, state=JobState.FAILED, crashes=count,
                   error=f"worker crashed {count} times ({how}); giving up (worker.max_crashes={max_crashes}); "
                         "`dicomnode jobs retry` runs it again")


def lost_worker(job: Job, max_crashes: int) -> Job:
    """The scale-out queue redelivered a ``running`` job: its worker died (``kill -9``, power)
    or lost its broker connection. Counted as a crash; other states are left as they are."""
    if job.state is not JobState.RUNNING:
        return job
    return crashed(job, "worker lost: the queue redelivered the job after its worker's connection closed",
                   max_crashes)


def dead_lettered(job: Job, deliveries: int) -> Job:
    """The queue gave up on the job after ``deliveries`` deliveries (``executor.delivery_limit``):
    every run killed its worker. ``failed`` until ``dicomnode jobs retry``."""
    if job.state not in (JobState.QUEUED, JobState.RUNNING):
        return job
    return replace(job, state=JobState.FAILED, error=f"dead-lettered by the queue after {deliveries} deliveries "
                   f"(executor.delivery_limit), {job.runs} runs each ending with its worker dead; last: "
                   f"{job.error or 'no error recorded'}; `dicomnode jobs retry` runs it again")


def interrupt(job: Job) -> Job:
    """The node shuts down while the job runs: back to ``queued`` for the next start."""
    _require(job, "interrupt", JobState.RUNNING)
    return replace(job, state=JobState.QUEUED)


def recover(job: Job) -> Job:
    """At start: a job left ``running`` by a killed node runs again."""
    return interrupt(job)


# -- delivering -----------------------------------------------------------------------
def _delivery_of(job: Job, name: str) -> Delivery:
    _require(job, f"deliver to {name}", JobState.DISPATCHING)
    if name not in job.destinations:
        raise JobStateError(f"job {job.job_id}: no destination {name!r}", job_id=job.job_id)
    return job.destinations[name]


def _with(job: Job, name: str, delivery: Delivery) -> Job:
    return replace(job, destinations={**job.destinations, name: delivery})


def delivered(job: Job, name: str, now: float, started: float | None = None) -> Job:
    """One destination received every output (the send started at ``started``, default ``now``)."""
    d = _delivery_of(job, name)
    return _with(job, name, replace(d, state=DeliveryState.SENT, attempts=d.attempts + 1, last_error="",
                                    sent_at=now, history=d.logged(Attempt(now if started is None else started))))


def delivery_failed(job: Job, name: str, error: str, now: float, *, max_attempts: int, backoff_s: float,
                    backoff_max_s: float, started: float | None = None) -> Job:
    """A send failed: retry after a growing, capped backoff, or ``dead`` after ``max_attempts``."""
    d = _delivery_of(job, name)
    attempts, at = d.attempts + 1, now if started is None else started
    if attempts >= max_attempts:
        return _with(job, name, replace(d, state=DeliveryState.DEAD, attempts=attempts, last_error=error,
                                        history=d.logged(Attempt(at, error))))
    delay = min(backoff_max_s, backoff_s * 2 ** (attempts - 1))
    return _with(job, name, replace(d, state=DeliveryState.RETRYING, attempts=attempts, last_error=error,
                                    next_at=now + delay, history=d.logged(Attempt(at, error, delay))))


def settle(job: Job) -> Job:
    """``dispatching`` → ``done`` (all sent; ``refused`` for a refusal's report) or ``dead``
    (one dead); unchanged while sends are open."""
    _require(job, "settle", JobState.DISPATCHING)
    if not job.ended_deliveries():
        return job
    dead = any(d.state is DeliveryState.DEAD for d in job.destinations.values())
    sent = JobState.REFUSED if job.refusal else JobState.DONE
    return replace(job, state=JobState.DEAD if dead else sent)


def retry(job: Job) -> Job:
    """``dicomnode jobs retry``: run a failed job again, or re-send what was not sent.

    A ``failed`` job goes back to ``queued`` with a fresh crash count; so does a
    ``refused`` one (e.g. after its bundle's requirements changed), with every destination
    re-armed. Otherwise every destination not yet sent is re-armed (fresh attempt count)
    and the job is ``dispatching`` again.

    Raises
    ------
    JobStateError
        Nothing to retry: the job is queued or running, or every destination has it.
    """
    if job.state is JobState.FAILED:
        return replace(job, state=JobState.QUEUED, crashes=0, error="")
    if job.state is JobState.REFUSED:
        rearmed = {n: Delivery(history=d.history) for n, d in job.destinations.items()}
        return replace(job, state=JobState.QUEUED, crashes=0, refusal="", destinations=rearmed)
    _require(job, "retry", JobState.DISPATCHING, JobState.DEAD, JobState.DONE)
    unsent = [n for n, d in job.destinations.items() if d.state is not DeliveryState.SENT]
    if not unsent:
        raise JobStateError(f"job {job.job_id}: nothing to re-send (every destination has it)", job_id=job.job_id)
    rearmed = {**job.destinations, **{n: Delivery(history=job.destinations[n].history) for n in unsent}}
    return replace(job, state=JobState.DISPATCHING, destinations=rearmed)
