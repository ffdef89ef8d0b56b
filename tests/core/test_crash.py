"""kill -9 of a real node subprocess while receiving, while a job runs, and while sending.

After a restart every acknowledged instance is on disk, the series completes, the job
runs and the result reaches the PACS exactly once (deterministic UIDs: one object).
"""

from __future__ import annotations

import threading

import pydicom
import pytest
from conftest import MR_SOP, NodeProcess, mr_series, node_config
from netutil import free_port, pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import SpoolError
from dicomnode.spool import Spool

pytestmark = pytest.mark.serial


def _config(tmp_path, bundle, pacs_port):
    dests = {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port, "timeout_s": 10},
             "outbox": {"type": "folder", "path": str(tmp_path / "outbox")}}
    return node_config(tmp_path, bundle, destinations=dests, assembly={"quiet_s": 2},
                       dispatch={"max_attempts": 50, "backoff_s": 0.3, "backoff_max_s": 1})


def _states(spool: Spool) -> list[str]:
    states = []
    for job_id in spool.job_ids():
        try:
            states.append(spool.read_job(job_id)["state"])
        except SpoolError:
            states.append("creating")
    return states


def _all_instances(spool: Spool) -> set[str]:
    paths = [*spool.root.glob("incoming/*/*.dcm"), *spool.root.glob("jobs/*/input/*.dcm")]
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}


def _send(port: int, files) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert all(int(assoc.send_c_store(f).Status) == 0 for f in files)
    assoc.release()


def test_kill_while_receiving(tmp_path, plumbing_bundle):
    """kill -9 on an open association after 40 of 120 acks: exactly the acked instances are
    spooled, and the restarted node completes the series from them."""
    files = mr_series(tmp_path / "in", 120, seed="kill-recv")
    pacs_port = free_port()
    node = NodeProcess(_config(tmp_path, plumbing_bundle(), pacs_port), tmp_path / "node.log").start()
    acked: list[str] = []
    paused, killed = threading.Event(), threading.Event()

    def sender() -> None:
        assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
        for number, path in enumerate(files):
            if number == 40:  # mid-series: wait until the test has killed the node
                paused.set()
                killed.wait(60)
            ds = pydicom.dcmread(path)
            try:
                status = assoc.send_c_store(ds)
            except Exception:  # noqa: BLE001 - the peer died mid-association
                return
            if "Status" not in status:
                return
            if int(status.Status) == 0:
                acked.append(ds.SOPInstanceUID)
    thread = threading.Thread(target=sender)
    thread.start()
    assert paused.wait(60)
    node.kill9()
    killed.set()
    thread.join(30)
    assert len(acked) == 40
    spool = Spool(tmp_path / "spool")
    assert _all_instances(spool) == set(acked)  # every ack is on disk, nothing else
    with pacs(port=pacs_port) as scp:
        node.start()
        try:
            wait_for(lambda: _states(spool) == ["done"], timeout=90)
            assert len(scp.stored) == 1
            record = spool.read_job(spool.job_ids()[0])
            assert record["findings"]["instances"] == len(acked)
        finally:
            assert node.stop() == 0


def test_kill_while_job_runs(tmp_path, plumbing_bundle):
    files = mr_series(tmp_path / "in", 5, seed="kill-job")
    pacs_port = free_port()
    config = _config(tmp_path, plumbing_bundle(sleep_s=6), pacs_port)
    node = NodeProcess(config, tmp_path / "node.log").start()
    assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert all(int(assoc.send_c_store(f).Status) == 0 for f in files)
    assoc.release()
    spool = Spool(tmp_path / "spool")
    wait_for(lambda: _states(spool) == ["running"], timeout=60)
    node.kill9()
    with pacs(port=pacs_port) as scp:
        node.start()
        try:
            wait_for(lambda: _states(spool) == ["done"], timeout=90)
            record = spool.read_job(spool.job_ids()[0])
            assert record["runs"] == 2
            assert list(scp.stored.values()) == [1]
        finally:
            node.stop()


def test_kill_while_sending(tmp_path, plumbing_bundle):
    """kill -9 while the result's C-STORE is in flight. The restarted node re-sends the same
    object (same SOP Instance UID), and when the modality sends the series again the new
    job's result has that UID too: the PACS holds exactly one object (deterministic UIDs)."""
    files = mr_series(tmp_path / "in", 3, seed="kill-send")
    pacs_port = free_port()
    node = NodeProcess(_config(tmp_path, plumbing_bundle(), pacs_port), tmp_path / "node.log").start()
    spool = Spool(tmp_path / "spool")
    release = threading.Event()
    with pacs(port=pacs_port, hold=release) as slow:
        _send(node.port, files)
        assert slow.entered.wait(60)  # the C-STORE to the PACS is in flight
        node.kill9()
        release.set()
        assert _states(spool) == ["dispatching"]
        wait_for(lambda: slow.stored, timeout=30)  # the PACS kept the copy sent before the kill
    [before_kill] = slow.stored
    with pacs(port=pacs_port) as scp:
        node.start()
        try:
            wait_for(lambda: _states(spool) == ["done"], timeout=90)
            assert scp.stored == {before_kill: 1}
            _send(node.port, files)  # the modality sends the series again: a second job
            wait_for(lambda: _states(spool) == ["done", "done"], timeout=90)
            assert scp.stored == {before_kill: 2}
        finally:
            assert node.stop() == 0


def test_sigint_drains_requeues_running_job_and_exits_cleanly(tmp_path, plumbing_bundle):
    import signal

    files = mr_series(tmp_path / "in", 2, seed="sigint")
    node = NodeProcess(_config(tmp_path, plumbing_bundle(sleep_s=30), free_port()), tmp_path / "node.log").start()
    assoc = store_association(node.port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert all(int(assoc.send_c_store(f).Status) == 0 for f in files)
    assoc.release()
    spool = Spool(tmp_path / "spool")
    wait_for(lambda: _states(spool) == ["running"], timeout=60)
    assert node.proc is not None
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(30) == 0  # drain timeout 5 s, then the job is requeued
    assert _states(spool) == ["queued"]
    log = (tmp_path / "node.log").read_text()
    assert "draining" in log and "requeued" in log


def test_spool_expiry_removes_old_unmatched(tmp_path):
    import os
    import time as _time

    spool = Spool(tmp_path / "spool")
    old = spool.root / "unmatched" / "1.2.3-abc"
    old.mkdir()
    os.utime(old, (_time.time() - 10 * 86400,) * 2)
    fresh = spool.root / "unmatched" / "1.2.4-def"
    fresh.mkdir()
    assert spool.expire(7 * 86400) == 1
    assert not old.exists() and fresh.exists()


def test_half_created_job_is_finished_at_start(tmp_path, plumbing_bundle):
    """A crash between moving a series into a job and publishing it: the restart finishes it."""
    import shutil

    from conftest import running_node

    config = _config(tmp_path, plumbing_bundle(), free_port())
    spool = Spool(tmp_path / "spool")
    files = mr_series(tmp_path / "in", 3, seed="staged")
    staging = spool.staging_dir("20260101T000000-deadbeef")
    (staging / "input").mkdir(parents=True)
    for path in files:
        shutil.copy(path, staging / "input" / f"{pydicom.dcmread(path).SOPInstanceUID}.dcm")
    headers = {"Modality": "MR", "StudyInstanceUID": pydicom.dcmread(files[0]).StudyInstanceUID,
               "SeriesInstanceUID": pydicom.dcmread(files[0]).SeriesInstanceUID}
    (staging / "input" / "series.json").write_text(__import__("json").dumps({"headers": headers, "first_seen": 0}))
    assert spool.job_ids() == []
    with pacs(port=yaml_port(config)) as scp, running_node(config):
        wait_for(lambda: _states(spool) == ["done"], timeout=60)
        assert len(scp.stored) == 1
    assert spool.staged_jobs() == []


def yaml_port(config) -> int:
    import yaml
    return yaml.safe_load(config.read_text())["destinations"]["pacs"]["port"]
