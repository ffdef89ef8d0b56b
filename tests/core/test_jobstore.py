"""The JobStore contract, run against every store: the file spool's and PostgreSQL's.

The PostgreSQL store runs on a private server (tests/pgserver.py: initdb + pg_ctl in a temp
dir, unix socket only), one fresh database per test; two stores on one database stand for
two nodes. Without PostgreSQL installed those params skip (``make deps`` installs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mr_series
from netutil import wait_for
from pgserver import fresh_database, postgres_server

from dicomnode import jobs
from dicomnode.errors import JobStateError, SpoolError
from dicomnode.jobs import Job, JobState
from dicomnode.jobstore import FileJobStore, JobStore
from dicomnode.spool import Spool


def _job(job_id: str, series_uid: str = "1.2.3") -> Job:
    return jobs.new_job(job_id, route="t2", pipeline="plumbing:create", model="m", model_path="/m", model_version="1",
                        study_uid="1.2", series_uid=series_uid, instances=2, destinations=["outbox"], created=1.0)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as conninfo:
        yield conninfo


@pytest.fixture
def pg_database(request) -> str:
    """A fresh, empty database on the private server; its conninfo."""
    return fresh_database(request.getfixturevalue("pg_server"))


@pytest.fixture(params=["file", "postgres"])
def store(request, tmp_path: Path) -> Iterator[JobStore]:
    spool = Spool(tmp_path / "spool")
    if request.param == "file":
        yield FileJobStore(spool)
        return
    from dicomnode.jobstore_pg import PostgresJobStore
    pg = PostgresJobStore(spool, request.getfixturevalue("pg_database"))
    yield pg
    pg.close()


def _corrupt(store: JobStore, job_id: str) -> None:
    """Overwrite a job's record with one that is not a job record, behind the store's back."""
    from dicomnode.jobstore_pg import PostgresJobStore
    if isinstance(store, PostgresJobStore):
        import psycopg
        with psycopg.connect(store.conninfo, autocommit=True) as conn:
            conn.execute("UPDATE dicomnode_jobs SET record = '{\"state\": \"exploded\"}' WHERE id = %s", (job_id,))
    else:
        (store.job_dir(job_id) / "job.json").write_text('{"state": "exploded"}')


def _incoming(store: JobStore, tmp_path: Path, seed: str) -> str:
    """Spool a real two-instance series into incoming/ as the SCP would; its series UID."""
    assert isinstance(store, FileJobStore)  # PostgresJobStore too: its folders are on the spool
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
    _corrupt(store, "bad")
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


# -- PostgreSQL only: records in the database, several nodes on one database ---------------------
def _nodes(pg_database: str, tmp_path: Path, n: int = 2) -> list[JobStore]:
    from dicomnode.jobstore_pg import PostgresJobStore
    spool = Spool(tmp_path / "spool")  # the shared spool: the same path on every node
    return [PostgresJobStore(spool, pg_database) for _ in range(n)]


def test_postgres_records_live_in_the_database_and_every_node_sees_them(pg_database, tmp_path):
    node_a, node_b = _nodes(pg_database, tmp_path)
    node_a.create(_job("shared"), _incoming(node_a, tmp_path, "shared"))
    assert not (node_a.job_dir("shared") / "job.json").exists()  # the folder holds inputs/outputs only
    assert node_b.ids() == ["shared"]
    node_b.change("shared", jobs.start_run)
    assert node_a.get("shared").state is JobState.RUNNING and node_a.counts() == {"running": 1}


def test_postgres_recover_publishes_a_job_whose_insert_was_not_committed(pg_database, tmp_path):
    """A crash after the folder was renamed into place but before the row was committed."""
    node, = _nodes(pg_database, tmp_path, 1)
    folder = node.job_dir("renamed")
    (folder / "input").mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(_job("renamed").to_json()))
    found = node.recover(lambda *_: None)
    assert found.to_run == ["renamed"] and node.get("renamed").state is JobState.QUEUED
    assert not (folder / "job.json").exists()


def test_scale_out_finishes_only_half_made_jobs_old_enough_to_be_a_crash(pg_database, tmp_path):
    """On a shared spool a young staging folder may be another receiver's job in the making:
    left alone; an old one (and a folder whose row was never committed) is finished, and its
    job goes into the outbox to be published."""
    import os

    from dicomnode.jobstore_pg import PostgresJobStore
    store = PostgresJobStore(Spool(tmp_path / "spool"), pg_database, queue_of=lambda job: "mri")
    for job_id in ("young", "old"):
        (store.spool.staging_dir(job_id) / "input").mkdir(parents=True)
        (store.spool.staging_dir(job_id) / "job.json").write_text(json.dumps(_job(job_id).to_json()))
    (store.job_dir("renamed") / "input").mkdir(parents=True)
    (store.job_dir("renamed") / "job.json").write_text(json.dumps(_job("renamed").to_json()))
    for path in (store.spool.staging_dir("old"), store.job_dir("renamed") / "job.json"):
        os.utime(path, (1.0, 1.0))
    assert store.finish_half_made(lambda *_: None, older_than_s=120) == 2
    assert store.spool.staged_jobs() == ["young"] and sorted(store.ids()) == ["old", "renamed"]
    published: list[tuple[str, str]] = []
    store.publish_due(lambda job_id, queue: published.append((job_id, queue)))
    assert sorted(published) == [("old", "mri"), ("renamed", "mri")]


def test_two_nodes_never_both_claim_a_queued_job(pg_database, tmp_path):
    """Node A is inside its claim (row read, not yet written) when node B tries: B must wait
    for A's row lock and then see ``running``, never claim the job as well."""
    import psycopg
    node_a, node_b = _nodes(pg_database, tmp_path)
    node_a.create(_job("race"), _incoming(node_a, tmp_path, "race"))
    a_inside, b_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def b_waits_for_a_lock() -> bool:
        with psycopg.connect(pg_database) as conn:
            return bool(conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0])

    def claim_slowly(job: Job) -> Job:
        a_inside.set()
        wait_for(lambda: b_done.is_set() or b_waits_for_a_lock(), timeout=30)
        return jobs.start_run(job)

    def claim(name: str, node: JobStore, transition) -> None:
        try:
            outcome[name] = node.change("race", transition).state
        except JobStateError as exc:
            outcome[name] = exc
        finally:
            if name == "b":
                b_done.set()
    a = threading.Thread(target=claim, args=("a", node_a, claim_slowly))
    a.start()
    assert a_inside.wait(30)
    b = threading.Thread(target=claim, args=("b", node_b, jobs.start_run))
    b.start()
    a.join(60)
    b.join(60)
    assert outcome["a"] is JobState.RUNNING
    assert isinstance(outcome["b"], JobStateError) and "state running" in str(outcome["b"])
    assert node_b.get("race").runs == 1


def test_threads_on_two_nodes_racing_for_queued_jobs_claim_each_once(pg_database, tmp_path):
    nodes = _nodes(pg_database, tmp_path)
    ids = [f"r{i}" for i in range(4)]
    for job_id in ids:
        nodes[0].create(_job(job_id), _incoming(nodes[0], tmp_path, job_id))
    start = threading.Barrier(8)
    claims: list[str] = []

    def worker(node: JobStore) -> None:
        start.wait(30)
        for job_id in ids:
            with contextlib.suppress(JobStateError):
                node.change(job_id, jobs.start_run)
                claims.append(job_id)
    threads = [threading.Thread(target=worker, args=(nodes[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claims) == ids
    assert all(nodes[1].get(j).runs == 1 for j in ids)


def test_postgres_unreachable_database_is_a_spool_error_without_the_password(tmp_path):
    from dicomnode.jobstore_pg import PostgresJobStore
    missing = tmp_path / "no-server-here"
    missing.mkdir()
    with pytest.raises(SpoolError, match=r"job database .*password=\*\*\*") as caught:
        PostgresJobStore(Spool(tmp_path / "spool"), f"host={missing} user=node password=s3cret dbname=jobs")
    assert "s3cret" not in str(caught.value)
