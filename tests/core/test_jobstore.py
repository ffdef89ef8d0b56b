"""The JobStore contract, run against every store (today: the file spool's).

A database-backed store for the scale-out mode must pass the same tests: add a fixture
param that builds it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from conftest import mr_series

from dicomnode import jobs
from dicomnode.errors import JobStateError, SpoolError
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import FileJobStore, JobStore
from dicomnode.spool import Spool


def _job(job_id: str, series_uid: str = "1.2.3") -> Job:
    return jobs.new_job(job_id, route="t2", pipeline="plumbing:create", model="m", model_path="/m", model_version="1",
                        study_uid="1.2", series_uid=series_uid, instances=2, destinations=["outbox"], created=1.0)


@pytest.fixture(params=["file"])
def store(request, tmp_path: Path) -> JobStore:
    assert request.param == "file"
    return FileJobStore(Spool(tmp_path / "spool"))


def _incoming(store: JobStore, tmp_path: Path, seed: str) -> str:
    """Spool a real two-instance series into incoming/ as the SCP would; its series UID."""
    assert isinstance(store, FileJobStore)
    files = mr_series(tmp_path / seed, 2, seed=seed)
    import pydicom
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    folder = store.spool.incoming_dir(series_uid)
    folder.mkdir(parents=True)
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "series.json").write_text(json.dumps({"headers": {"SeriesInstanceUID": series_uid}}))
    return series_uid


def test_create_publishes_the_series_as_the_jobs_input(store, tmp_path):
    series_uid = _incoming(store, tmp_path, "create")
    store.create(_job("20261130T000000-aaaa0001", series_uid), series_uid)
    assert store.ids() == ["20261130T000000-aaaa0001"]
    got = store.get("20261130T000000-aaaa0001")
    assert got.updated > 0 and got == dataclasses.replace(_job("20261130T000000-aaaa0001", series_uid),
                                                          updated=got.updated)
    assert len(list((store.job_dir("20261130T000000-aaaa0001") / "input").glob("*.dcm"))) == 2


def test_change_applies_a_transition_durably_and_refuses_illegal_ones(store, tmp_path):
    store.create(_job("j1"), _incoming(store, tmp_path, "change"))
    running = store.change("j1", jobs.start_run)
    assert store.get("j1") == running and running.state is JobState.RUNNING
    with pytest.raises(JobStateError, match="cannot start a job in state running"):
        store.change("j1", jobs.start_run)
    assert store.get("j1").runs == 1  # the refused transition wrote nothing


def test_changes_from_many_threads_are_not_lost(store, tmp_path):
    store.create(jobs.finish_run(jobs.start_run(_job("j2")), [], {}, 0.0), _incoming(store, tmp_path, "threads"))

    def fail_once() -> None:
        store.change("j2", lambda j: jobs.delivery_failed(j, "outbox", "x", 0.0, max_attempts=100, backoff_s=0,
                                                           backoff_max_s=0))
    threads = [threading.Thread(target=fail_once) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("j2").destinations["outbox"].attempts == 20


def test_recover_requeues_interrupted_runs_and_sorts_what_to_do(store, tmp_path):
    for job_id, transition in [("a", jobs.start_run), ("b", lambda j: j),
                               ("c", lambda j: jobs.finish_run(jobs.start_run(j), [], {}, 0.0)),
                               ("d", lambda j: jobs.fail(jobs.start_run(j), "x"))]:
        store.create(_job(job_id), _incoming(store, tmp_path, job_id))
        store.change(job_id, transition)
    found = store.recover(lambda *_: None)
    assert (found.to_run, found.to_dispatch) == (["a", "b"], ["c", "d"])
    assert store.get("a").state is JobState.QUEUED and store.get("a").runs == 1


def test_recover_finishes_half_made_jobs(store, tmp_path):
    spool = store.spool
    staged = spool.staging_dir("with-record")
    (staged / "input").mkdir(parents=True)
    (staged / "job.json").write_text(json.dumps(_job("with-record").to_json()))
    routed = spool.staging_dir("input-only")
    series_uid = _incoming(store, tmp_path, "half")
    routed.mkdir(parents=True)
    spool.incoming_dir(series_uid).rename(routed / "input")
    unrouted = spool.staging_dir("no-route")
    (unrouted / "input").mkdir(parents=True)
    (unrouted / "input" / "series.json").write_text(json.dumps({"headers": {"Modality": "CT"}}))
    spool.staging_dir("empty").mkdir(parents=True)

    def factory(job_id: str, headers: dict, instances: int) -> Job | None:
        return _job(job_id, headers["SeriesInstanceUID"]) if headers.get("SeriesInstanceUID") else None
    found = store.recover(factory)
    assert sorted(found.to_run) == ["input-only", "with-record"] and found.to_dispatch == []
    assert store.get("input-only").series_uid == series_uid
    assert (spool.root / "unmatched" / "no-route" / "series.json").is_file()
    assert spool.staged_jobs() == []


def test_unreadable_record_is_a_spool_error_and_counted(store, tmp_path):
    store.create(_job("ok"), _incoming(store, tmp_path, "ok"))
    store.create(_job("bad"), _incoming(store, tmp_path, "bad"))
    (store.job_dir("bad") / "job.json").write_text('{"state": "exploded"}')
    with pytest.raises(SpoolError, match="job bad: not a job record"):
        store.get("bad")
    assert store.counts() == {"queued": 1, "unreadable": 1}


def test_expire_forgets_only_done_jobs_past_the_retention(store, tmp_path):
    def ended(dead: bool):
        def settle(job: Job) -> Job:
            job = jobs.finish_run(jobs.start_run(job), [], {}, 0.0)
            job = jobs.delivery_failed(job, "outbox", "x", 0.0, max_attempts=1, backoff_s=0, backoff_max_s=0) \
                if dead else jobs.delivered(job, "outbox", 0.0)
            return jobs.settle(job)
        return settle
    for job_id, dead in [("done", False), ("dead", True)]:
        store.create(_job(job_id), _incoming(store, tmp_path, job_id))
        store.change(job_id, ended(dead))
    updated = max(store.get(j).updated for j in store.ids())
    assert store.expire(7 * 86400, now=updated + 7 * 86400 - 60) == 0  # not yet
    assert store.expire(7 * 86400, now=updated + 8 * 86400) == 1
    assert store.ids() == ["dead"]  # a dead job waits for a person, whatever its age


def test_retry_requests_are_taken_once(store, tmp_path):
    store.request_retry("j9")
    assert store.take_requests() == ["j9"]
    assert store.take_requests() == []
