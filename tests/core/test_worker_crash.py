"""A worker process that dies is not the end of a job (issue 8).

The child is killed with SIGKILL mid-job (the job completes on a fresh child), a poison
input segfaults the child on every run (the job fails after ``worker.max_crashes`` runs
and the next job is done), and a child that died while idle costs the next job nothing.
Real associations, a real node, real signals.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import SpoolError
from dicomnode.net.scu import echo


def _send(port: int, files: list[Path]) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert [int(assoc.send_c_store(f).Status) for f in files] == [0] * len(files)
    assoc.release()


def _records(node) -> list[dict]:
    """The readable job records (a job being created has no job.json yet)."""
    records = []
    for job_id in node.spool.job_ids():
        try:
            records.append(node.spool.read_job(job_id))
        except SpoolError:
            continue
    return records


def _terminal(node, count: int) -> list[dict] | None:
    records = _records(node)
    done = [r for r in records if r["state"] in ("done", "failed", "dead")]
    return records if len(records) == count and len(done) == count else None


def _worker_pid(node) -> int:
    """PID of the worker process holding the (only) job, from the plumbing pipeline."""
    path = wait_for(lambda: next(node.spool.root.glob("jobs/*/work/worker.pid"), None), timeout=60)
    return int(wait_for(lambda: path.read_text(), timeout=10))


def test_child_killed_mid_job_runs_again_on_a_fresh_child(tmp_path, plumbing_bundle):
    release = tmp_path / "release"
    config = node_config(tmp_path, plumbing_bundle(hold_file=str(release)))
    with running_node(config) as node:
        _send(node.port, mr_series(tmp_path / "in", 3, seed="kill-mid-job"))
        first = _worker_pid(node)
        os.kill(first, signal.SIGKILL)
        # the retry writes its own worker.pid: a new process, not the killed one
        wait_for(lambda: _worker_pid(node) != first, timeout=60)
        release.touch()
        [record] = wait_for(lambda: _terminal(node, 1), timeout=60)
    assert record["state"] == "done", record
    assert (record["runs"], record["crashes"], record["error"]) == (2, 1, "")
    assert record["findings"]["instances"] == 3
    assert len(list((tmp_path / "outbox").rglob("result.json"))) == 1


def test_poison_input_fails_after_max_crashes_and_the_next_job_is_done(tmp_path, plumbing_bundle):
    config = node_config(tmp_path, plumbing_bundle(crash_on="POISON"), worker={"max_crashes": 2})
    with running_node(config) as node:
        _send(node.port, mr_series(tmp_path / "poison", 2, seed="poison", description="POISON"))
        _send(node.port, mr_series(tmp_path / "good", 2, seed="good", description="AX T2 GOOD"))
        records = wait_for(lambda: _terminal(node, 2), timeout=120)
        assert echo("127.0.0.1", node.port, timeout_s=5) == 0  # the node still serves
        metrics = node.metrics.render()
    by_state = {r["state"]: r for r in records}
    assert set(by_state) == {"failed", "done"}, records
    poison, good = by_state["failed"], by_state["done"]
    assert poison["error"].startswith("worker crashed 2 times (signal SIGSEGV)"), poison["error"]
    assert (poison["runs"], poison["crashes"]) == (2, 2)
    assert (good["runs"], good.get("crashes", 0), good["error"]) == (1, 0, "")
    assert 'dicomnode_worker_crashes_total{pipeline="plumbing:create"} 2' in metrics


def test_child_dead_while_idle_costs_the_next_job_nothing(tmp_path, plumbing_bundle):
    release = tmp_path / "release"
    config = node_config(tmp_path, plumbing_bundle(hold_file=str(release)))
    with running_node(config) as node:
        _send(node.port, mr_series(tmp_path / "a", 2, seed="idle-a"))
        pid = _worker_pid(node)
        release.touch()
        [first] = wait_for(lambda: _terminal(node, 1), timeout=60)
        assert first["state"] == "done"
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer picked the idle worker
        _send(node.port, mr_series(tmp_path / "b", 2, seed="idle-b"))
        records = wait_for(lambda: _terminal(node, 2), timeout=60)
    second = next(r for r in records if r["job_id"] != first["job_id"])
    assert (second["state"], second["runs"], second.get("crashes", 0)) == ("done", 1, 0), second


def test_an_unreadable_job_costs_only_itself(tmp_path, plumbing_bundle, caplog):
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        broken = node.spool.job_dir("20261130T000000-broken00")
        broken.mkdir()
        (broken / "job.json").write_text("{not json")
        node.worker.submit("20261130T000000-broken00")  # as a retry request or a restart would
        _send(node.port, mr_series(tmp_path / "ok", 2, seed="after-broken"))
        good = wait_for(lambda: [r for r in _records(node) if r["state"] == "done"], timeout=60)
    assert len(good) == 1 and good[0]["runs"] == 1
    assert "job 20261130T000000-broken00: cannot run it" in caplog.text

