"""The job state machine (dicomnode.jobs): every transition, every refusal, the JSON form."""

from __future__ import annotations

import dataclasses

import pytest

from dicomnode import jobs
from dicomnode.errors import JobStateError
from dicomnode.jobs import Attempt, Delivery, DeliveryState, Job, JobState

LIMITS = {"max_attempts": 3, "backoff_s": 2.0, "backoff_max_s": 5.0}


def _job(**over: object) -> Job:
    job = jobs.new_job("20261130T000000-abcd1234", route="t2", pipeline="mri-lln", model="lln", model_path="/m",
                       model_version="1", study_uid="1.2", series_uid="1.2.3", instances=4,
                       destinations=["pacs", "outbox"], created=100.0)
    return dataclasses.replace(job, **over)


def _running() -> Job:
    return jobs.start_run(_job())


def _dispatching() -> Job:
    return jobs.finish_run(_running(), ["SEG-1.dcm"], {"status": "negative"}, 1.23456)


def test_new_job_is_queued_or_failed_when_its_route_is_disabled():
    assert _job().state is JobState.QUEUED
    assert set(_job().destinations) == {"pacs", "outbox"}
    disabled = jobs.new_job("j", route="t2", pipeline="p", model="m", model_path="/m", model_version="",
                            study_uid="1", series_uid="2", instances=1, destinations=["pacs"], created=0.0,
                            problem="model 'm' fails its hashes")
    assert (disabled.state, disabled.error) == (JobState.FAILED, "route t2 disabled: model 'm' fails its hashes")


def test_run_to_dispatching_records_outputs_and_counts_runs():
    job = _dispatching()
    assert (job.state, job.runs, job.outputs, job.pipeline_seconds) == (JobState.DISPATCHING, 1, ("SEG-1.dcm",), 1.235)
    assert job.findings == {"status": "negative"}


def test_fail_and_interrupt_and_recover():
    assert jobs.fail(_running(), "bad series").state is JobState.FAILED
    assert jobs.fail(_running(), "bad series").error == "bad series"
    assert jobs.interrupt(_running()).state is JobState.QUEUED
    assert jobs.recover(_running()).state is JobState.QUEUED


def test_crash_requeues_until_the_limit_then_fails():
    job = jobs.crashed(_running(), "signal SIGSEGV", 3)
    assert (job.state, job.crashes) == (JobState.QUEUED, 1)
    assert "signal SIGSEGV" in job.error and "1 of 3" in job.error
    job = jobs.crashed(jobs.start_run(job), "signal SIGKILL", 3)
    assert (job.state, job.crashes) == (JobState.QUEUED, 2)
    job = jobs.crashed(jobs.start_run(job), "signal SIGSEGV", 3)
    assert (job.state, job.crashes, job.runs) == (JobState.FAILED, 3, 3)
    assert job.error.startswith("worker crashed 3 times (signal SIGSEGV)")


@pytest.mark.parametrize(("transition", "state"), [
    (jobs.start_run, JobState.RUNNING), (jobs.start_run, JobState.DONE),
    (lambda j: jobs.finish_run(j, [], {}, 0.0), JobState.QUEUED),
    (lambda j: jobs.fail(j, "x"), JobState.DISPATCHING),
    (lambda j: jobs.crashed(j, "signal SIGSEGV", 3), JobState.QUEUED),
    (jobs.interrupt, JobState.FAILED),
    (jobs.settle, JobState.RUNNING),
    (jobs.retry, JobState.QUEUED), (jobs.retry, JobState.RUNNING),
])
def test_illegal_transitions_raise(transition, state):
    with pytest.raises(JobStateError, match=f"in state {state.value}"):
        transition(_job(state=state))


def test_delivery_retries_with_growing_capped_backoff_then_dead():
    job = jobs.delivery_failed(_dispatching(), "pacs", "status 0xA700", 1000.0, **LIMITS)
    assert job.destinations["pacs"] == Delivery(DeliveryState.RETRYING, 1, "status 0xA700", 1002.0,
                                                history=(Attempt(1000.0, "status 0xA700", 2.0),))
    assert not job.destinations["pacs"].due(1001.0) and job.destinations["pacs"].due(1002.0)
    job = jobs.delivery_failed(job, "pacs", "status 0xC000", 1002.0, **{**LIMITS, "max_attempts": 4})
    assert job.destinations["pacs"].next_at == 1006.0  # 2 * 2**1
    job = jobs.delivery_failed(job, "pacs", "refused", 1006.0, **{**LIMITS, "max_attempts": 5})
    assert job.destinations["pacs"].next_at == 1011.0  # 2 * 2**2 = 8, capped at 5
    job = jobs.delivery_failed(job, "pacs", "refused", 1011.0, **{**LIMITS, "max_attempts": 4})
    assert (job.destinations["pacs"].state, job.destinations["pacs"].attempts) == (DeliveryState.DEAD, 4)
    assert [a.retry_in for a in job.destinations["pacs"].history] == [2.0, 4.0, 5.0, None]
    assert job.destinations["outbox"] == Delivery()  # the other destination is untouched


def test_settle_waits_for_open_deliveries_then_done_or_dead():
    job = jobs.delivered(_dispatching(), "outbox", 5.0)
    assert jobs.settle(job).state is JobState.DISPATCHING
    done = jobs.settle(jobs.delivered(job, "pacs", 6.0))
    assert done.state is JobState.DONE and done.destinations["pacs"].sent_at == 6.0
    dead = jobs.settle(jobs.delivery_failed(job, "pacs", "refused", 6.0, **{**LIMITS, "max_attempts": 1}))
    assert dead.state is JobState.DEAD


def test_delivery_needs_a_dispatching_job_and_a_known_destination():
    with pytest.raises(JobStateError, match="in state running"):
        jobs.delivered(_running(), "pacs", 1.0)
    with pytest.raises(JobStateError, match="no destination 'stow'"):
        jobs.delivered(_dispatching(), "stow", 1.0)


def test_retry_reruns_failed_and_rearms_unsent():
    failed = jobs.crashed(jobs.start_run(_job(crashes=2)), "signal SIGSEGV", 3)
    again = jobs.retry(failed)
    assert (again.state, again.crashes, again.error) == (JobState.QUEUED, 0, "")
    dead = jobs.settle(jobs.delivery_failed(jobs.delivered(_dispatching(), "outbox", 1.0), "pacs", "x", 1.0,
                                            **{**LIMITS, "max_attempts": 1}))
    rearmed = jobs.retry(dead)
    assert rearmed.state is JobState.DISPATCHING
    assert rearmed.destinations["pacs"] == Delivery(history=dead.destinations["pacs"].history)  # history kept
    assert rearmed.destinations["outbox"].state is DeliveryState.SENT
    done = jobs.settle(jobs.delivered(jobs.delivered(_dispatching(), "outbox", 1.0), "pacs", 1.0))
    with pytest.raises(JobStateError, match="nothing to re-send"):
        jobs.retry(done)


def test_json_round_trip_and_records_without_a_schema():
    job = jobs.delivery_failed(_dispatching(), "pacs", "refused", 1.0, **LIMITS)
    assert Job.from_json(job.to_json()) == job
    assert job.to_json()["state"] == "dispatching" and job.to_json()["schema"] == jobs.SCHEMA
    old = {**job.to_json(), "destinations": {"pacs": {"state": "pending", "attempts": 2, "last_error": "x",
                                                      "next_at": 9.0}}}
    del old["schema"], old["crashes"]
    parsed = Job.from_json(old)
    assert (parsed.schema, parsed.crashes) == (0, 0)
    assert parsed.destinations["pacs"].state is DeliveryState.RETRYING  # failed attempts were kept as "pending"


def test_a_record_that_is_not_a_job_is_refused():
    with pytest.raises(JobStateError, match="not a job record"):
        Job.from_json({"state": "exploded", "job_id": "x"})
