"""Series → job → pipeline → dispatch, on real associations: retries, dead-letter, re-send,
health/metrics, and logs without PHI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request

import pydicom
from conftest import MR_SOP, REPO, mr_series, node_config, running_node
from netutil import free_port, pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.errors import SpoolError


def _send(port: int, files) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert [int(assoc.send_c_store(f).Status) for f in files] == [0] * len(files)
    assoc.release()


def _job(node, state: str | None = None):
    ids = node.spool.job_ids()
    if len(ids) != 1:
        return None
    try:
        record = node.spool.read_job(ids[0])
    except SpoolError:  # job folder created, job.json not yet written
        return None
    return record if state is None or record["state"] == state else None


def test_series_flows_to_folder_and_pacs_with_deterministic_uids(tmp_path, plumbing_bundle, caplog):
    files = mr_series(tmp_path / "in", 6, seed="flow")
    caplog.set_level(logging.INFO)
    with pacs() as scp:
        dests = {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")},
                 "pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}}
        with running_node(node_config(tmp_path, plumbing_bundle(), destinations=dests)) as node:
            _send(node.port, files)
            record = wait_for(lambda: _job(node, "done"), timeout=60)
            assert record["findings"]["instances"] == 6
            assert set(record["destinations"]) == {"outbox", "pacs"}
            first = dict(scp.stored)
            assert len(first) == 1 and list(first.values()) == [1]
            # replaying the same series gives the same output UIDs: PACS still has one object
            _send(node.port, files)
            wait_for(lambda: sum(scp.stored.values()) == 2, timeout=60)
            assert list(scp.stored) == list(first)
        series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
        result = next((tmp_path / "outbox").glob(f"*/{series_uid}/plumbing:create/result.json"))
        assert json.loads(result.read_text())["findings"]["instances"] == 6
    for secret in ("SECRET^PATIENTNAME", "SECRET", "PID-SECRET-123", "19010203"):
        assert secret not in caplog.text
    assert series_uid in caplog.text  # logs do carry the series UID


def test_pacs_down_retries_then_delivers(tmp_path, plumbing_bundle):
    port = free_port()
    files = mr_series(tmp_path / "in", 3, seed="down")
    dests = {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": port, "timeout_s": 3}}
    config = node_config(tmp_path, plumbing_bundle(), destinations=dests,
                         dispatch={"max_attempts": 20, "backoff_s": 0.3, "backoff_max_s": 1})
    with running_node(config) as node:
        _send(node.port, files)
        wait_for(lambda: (r := _job(node)) and r["destinations"]["pacs"]["attempts"] >= 2, timeout=60)
        record = _job(node)
        assert record["state"] == "dispatching" and "association" in record["destinations"]["pacs"]["last_error"]
        with pacs(port=port) as scp:
            wait_for(lambda: _job(node, "done"), timeout=60)
            assert len(scp.stored) == 1
        assert node.metrics.value("dicomnode_send_failures_total", destination="pacs") >= 2


def test_dead_letter_then_jobs_retry_resends(tmp_path, plumbing_bundle):
    port = free_port()
    files = mr_series(tmp_path / "in", 2, seed="dead")
    dests = {"pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": port, "timeout_s": 2}}
    config = node_config(tmp_path, plumbing_bundle(), destinations=dests,
                         dispatch={"max_attempts": 2, "backoff_s": 0.2, "backoff_max_s": 0.5})
    with running_node(config) as node:
        _send(node.port, files)
        record = wait_for(lambda: _job(node, "dead"), timeout=60)
        assert record["destinations"]["pacs"]["attempts"] == 2
        listing = subprocess.run([sys.executable, "-m", "dicomnode", "jobs", "--config", str(config)],
                                 capture_output=True, text=True, cwd=REPO, timeout=60)
        assert record["job_id"] in listing.stdout and "dead" in listing.stdout
        with pacs(port=port) as scp:
            retry = subprocess.run([sys.executable, "-m", "dicomnode", "jobs", "retry", record["job_id"],
                                    "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=60)
            assert retry.returncode == 0, retry.stderr
            wait_for(lambda: _job(node, "done"), timeout=60)
            assert len(scp.stored) == 1


def test_pipeline_error_is_recorded_and_written_next_to_results(tmp_path, plumbing_bundle):
    files = mr_series(tmp_path / "in", 2, seed="fail")
    config = node_config(tmp_path, plumbing_bundle(fail="series has a slice gap between 2 and 3"))
    with running_node(config) as node:
        _send(node.port, files)
        record = wait_for(lambda: _job(node, "failed"), timeout=60)
        assert "slice gap" in record["error"]
        error = wait_for(lambda: list((tmp_path / "outbox").glob("*/*/*/error.json")), timeout=30)
        assert "slice gap" in json.loads(error[0].read_text())["error"]
        assert len(list((node.spool.job_dir(record["job_id"]) / "input").glob("*.dcm"))) == 2  # nothing lost


def test_healthz_and_metrics(tmp_path, plumbing_bundle):
    files = mr_series(tmp_path / "in", 4, seed="metrics")
    with running_node(node_config(tmp_path, plumbing_bundle())) as node:
        _send(node.port, files)
        wait_for(lambda: _job(node, "done"), timeout=60)
        base = f"http://127.0.0.1:{node.config.http.port}"
        health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())
        assert health["status"] == "ok" and health["listening"] and health["dicom_port"] == node.port
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        assert "dicomnode_instances_received_total 4" in text
        assert "dicomnode_series_completed_total 1" in text
        assert 'dicomnode_jobs{state="done"} 1' in text
        assert 'dicomnode_pipeline_seconds_count{pipeline="plumbing:create"} 1' in text
        assert 'dicomnode_send_attempts_total{destination="outbox"} 1' in text


def test_unmatched_series_is_recorded_not_processed(tmp_path, plumbing_bundle, caplog):
    files = mr_series(tmp_path / "in", 2, seed="nomatch")
    caplog.set_level(logging.INFO)
    rule = [{"name": "mr", "pipeline": "plumbing:create", "model": "plumbing", "destinations": ["outbox"],
             "match": {"all": [{"tag": "SeriesDescription", "regex": "(?i)never"}]}}]
    with running_node(node_config(tmp_path, plumbing_bundle(), routes=rule)) as node:
        _send(node.port, files)
        wait_for(lambda: list(node.spool.root.glob("unmatched/*/*.dcm")), timeout=30)
        assert node.spool.job_ids() == []
    assert "no route matched" in caplog.text and "fails regex" in caplog.text
