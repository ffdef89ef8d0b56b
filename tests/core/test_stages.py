"""The stages on their own, without a node: the Storage SCP with a spool, the dispatcher with
a job store, and the CLI in-process (issue 10: each seam can be tested directly).

Real associations on 127.0.0.1, real files, a real PACS SCP; nothing is faked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from conftest import MR_SOP, mr_series, node_config
from netutil import pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode import jobs
from dicomnode.cli import main
from dicomnode.config import load_config
from dicomnode.dispatch import Dispatcher, find_results
from dicomnode.jobs import DeliveryState, JobState
from dicomnode.jobstore import FileJobStore
from dicomnode.metrics import Metrics
from dicomnode.net.scp import StorageSCP, StoredInstance
from dicomnode.spool import Spool


def test_storage_scp_spools_and_reports_each_instance(tmp_path, plumbing_bundle):
    config = load_config(node_config(tmp_path, plumbing_bundle()), env={})
    stored: list[StoredInstance] = []
    scp = StorageSCP(config, Spool(config.spool.path), Metrics(), stored.append)
    port = scp.start()
    try:
        files = mr_series(tmp_path / "in", 3, seed="scp-unit")
        assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
        assert [int(assoc.send_c_store(f).Status) for f in files] == [0, 0, 0]
        assoc.release()
    finally:
        scp.stop()
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    assert sorted(s.info.sop_instance_uid for s in stored) == sorted(uids)
    spooled = sorted(Spool(config.spool.path).root.glob("incoming/*/*.dcm"))
    assert sorted(p.stem for p in spooled) == sorted(uids)


def _dispatching_job(store: FileJobStore, tmp_path: Path, destinations: list[str]) -> str:
    """A finished job with one real SR output, created the way the node creates jobs."""
    files = mr_series(tmp_path / "src", 2, seed="dispatch-unit")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    folder = store.spool.incoming_dir(series_uid)
    folder.mkdir(parents=True)
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    job = jobs.new_job("20261130T000000-unit0001", route="mr", pipeline="plumbing:create", model="plumbing",
                       model_path="/m", model_version="1", study_uid="1.2.3", series_uid=series_uid, instances=2,
                       destinations=destinations, created=0.0)
    store.create(job, series_uid)
    outputs = store.job_dir(job.job_id) / "outputs"
    ds = pydicom.dcmread(files[0])
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(outputs / "MR-out.dcm", enforce_file_format=True)
    (outputs / "findings.json").write_text("{}")
    store.change(job.job_id, jobs.start_run)
    store.change(job.job_id, lambda j: jobs.finish_run(j, ["MR-out.dcm"], {"n": 1}, 0.1))
    return job.job_id


def test_dispatcher_delivers_to_folder_and_pacs_then_done(tmp_path, plumbing_bundle, caplog):
    with pacs() as scp:
        dests = {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")},
                 "pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}}
        config = load_config(node_config(tmp_path, plumbing_bundle(), destinations=dests), env={})
        store = FileJobStore(Spool(config.spool.path))
        job_id = _dispatching_job(store, tmp_path, ["outbox", "pacs"])
        dispatcher = Dispatcher(config, store, Metrics(), rerun=lambda _: None)
        store.request_retry("20261130T000000-gone0000")  # a request for a job that no longer exists
        dispatcher.add(job_id)
        dispatcher.start()  # takes the stray request first: it must not stop the thread
        try:
            job = wait_for(lambda: store.get(job_id) if store.get(job_id).state.ended else None, timeout=30)
        finally:
            dispatcher.shutdown(5)
        assert job.state is JobState.DONE
        assert {n: d.state for n, d in job.destinations.items()} == {"outbox": DeliveryState.SENT,
                                                                    "pacs": DeliveryState.SENT}
        assert scp.stored == {"1.2.826.0.1.3680043.8.498.4242": 1}
    assert "job 20261130T000000-gone0000: cannot act on the retry request" in caplog.text
    [result] = find_results(tmp_path / "outbox", job.series_uid)
    assert json.loads(result.read_text())["outputs"] == ["MR-out.dcm"]


def test_cli_jobs_list_show_retry(tmp_path, plumbing_bundle, capsys):
    config_path = node_config(tmp_path, plumbing_bundle())
    config = load_config(config_path, env={})
    store = FileJobStore(Spool(config.spool.path))
    job_id = _dispatching_job(store, tmp_path, ["outbox"])
    store.change(job_id, lambda j: jobs.settle(jobs.delivery_failed(j, "outbox", "disk full", 1.0, max_attempts=1,
                                                                     backoff_s=1, backoff_max_s=1)))
    assert main(["jobs", "--config", str(config_path)]) == 0
    assert f"{job_id} dead" in capsys.readouterr().out.replace("  ", " ").replace("  ", " ")
    assert main(["jobs", "show", job_id, "--config", str(config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["destinations"]["outbox"]["last_error"] == "disk full"
    assert main(["jobs", "retry", job_id, "--config", str(config_path)]) == 0
    assert "re-armed (dispatching)" in capsys.readouterr().out
    assert store.get(job_id).destinations["outbox"].state is DeliveryState.PENDING
    assert store.take_requests() == [job_id]
    assert main(["jobs", "retry", job_id, "--config", str(config_path)]) == 0  # still unsent: re-armed again


def test_cli_refuses_retry_of_a_job_with_nothing_to_resend(tmp_path, plumbing_bundle, capsys):
    config_path = node_config(tmp_path, plumbing_bundle())
    store = FileJobStore(Spool(load_config(config_path, env={}).spool.path))
    job_id = _dispatching_job(store, tmp_path, ["outbox"])
    store.change(job_id, lambda j: jobs.settle(jobs.delivered(j, "outbox", 1.0)))
    assert main(["jobs", "retry", job_id, "--config", str(config_path)]) == 1
    assert "nothing to re-send" in capsys.readouterr().out


def test_cli_version_and_rules_test(tmp_path, plumbing_bundle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib.metadata import version
    assert capsys.readouterr().out.strip() == f"dicomnode {version('dicomnode')}"
    files = mr_series(tmp_path / "in", 1, seed="rules")
    assert main(["rules", "test", str(files[0]), "--config", str(node_config(tmp_path, plumbing_bundle()))]) == 0
    out = capsys.readouterr().out
    assert "→ mr (plumbing:create)" in out and "MATCH mr" in out


def test_storage_scu_sends_each_pdu_at_once(tmp_path):
    """The one Storage SCU (dispatch and replay) turns Nagle's algorithm off: with it on, a
    C-STORE waits ~40 ms for the peer's delayed ACK (replay to storescp: 58 → 221 MR
    instances/s, bench/ingest.py)."""
    import socket

    from dicomnode.config import Destination
    from dicomnode.net.scu import open_association

    with pacs() as scp:
        dest = Destination(name="pacs", type="dimse", ae_title="PACS", host="127.0.0.1", port=scp.port)
        assoc = open_association(dest, [(MR_SOP, ExplicitVRLittleEndian)])
        try:
            assert assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            assoc.release()
