"""Delivery failures from real peers: a PACS answering 0xA700 or 0xC000, a PACS refusing the
association, a STOW-RS endpoint answering 500/409/400 or a 202 with failed instances.

Each time the dispatcher retries with growing, capped backoff (checked in the attempt
history of job.json and in the arrival times at the peer, never against wall-clock
limits), then dead-letters the destination with an error naming the status and the peer;
once the peer recovers, ``dicomnode jobs retry`` delivers exactly one copy.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import StowServer, pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.cli import main
from dicomnode.errors import SpoolError

BACKOFF = {"max_attempts": 4, "backoff_s": 0.2, "backoff_max_s": 0.5}
#: backoff_s * 2**(n-1) capped at backoff_max_s after attempts 1-3; none after the 4th (dead)
WAITS = [0.2, 0.4, 0.5, None]
PEER = r"PACS@127\.0\.0\.1:\d+"


def _send(port: int, files: list[Path]) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert [int(assoc.send_c_store(f).Status) for f in files] == [0] * len(files)
    assoc.release()


def _settled(node: Any) -> dict[str, Any] | None:
    """The only job's record once it is dead or done (``None`` before)."""
    ids = node.spool.job_ids()
    try:
        record = node.spool.read_job(ids[0]) if len(ids) == 1 else None
    except SpoolError:  # job folder created, job.json not yet written
        return None
    return record if record and record["state"] in ("dead", "done") else None


def _check_backoff(history: list[dict[str, Any]], arrivals: list[float]) -> None:
    """Waits grow and are capped, and neither the node nor the peer saw an attempt early."""
    assert [attempt["retry_in"] for attempt in history] == WAITS
    for before, after in pairwise(history):
        assert after["at"] - before["at"] >= before["retry_in"]
    assert len(arrivals) == len(WAITS)
    for (before, after), wait in zip(pairwise(arrivals), WAITS[:-1], strict=True):
        assert after - before >= wait


def _dead_letter(node: Any, error: str) -> dict[str, Any]:
    """Wait for the job to settle; check it is dead with ``error`` on every attempt."""
    record = wait_for(lambda: _settled(node), timeout=60)
    state = record["destinations"]["dest"]
    assert (record["state"], state["state"], state["attempts"]) == ("dead", "dead", 4), record
    assert re.search(error, state["last_error"]), state["last_error"]
    assert all(re.search(error, attempt["error"]) for attempt in state["history"])
    return record


def _retry_and_deliver(node: Any, config: Path, record: dict[str, Any], capsys: Any) -> set[str]:
    """``dicomnode jobs retry JOB``; returns the SOP Instance UIDs of the job's outputs."""
    assert main(["jobs", "retry", record["job_id"], "--config", str(config)]) == 0
    assert "re-armed" in capsys.readouterr().out
    done = wait_for(lambda: _settled(node), timeout=60)
    assert done["state"] == "done" and done["destinations"]["dest"]["history"][-1]["error"] == ""
    outputs = node.spool.job_dir(record["job_id"]) / "outputs"
    return {pydicom.dcmread(outputs / name).SOPInstanceUID for name in record["outputs"] if name.endswith(".dcm")}


@pytest.mark.parametrize(("failure", "error"), [
    ({"status": 0xA700}, rf"{PEER} answered 0xA700 Refused: Out of Resources for [\d.]+"),
    ({"status": 0xC000}, rf"{PEER} answered 0xC000 Error for [\d.]+"),
    ({"refuse": True}, rf"association to {PEER} failed \(rejected: Calling AE title not recognised"),
], ids=["0xA700", "0xC000", "association-refused"])
def test_dimse_failure_retries_with_capped_backoff_then_dead_letters(tmp_path, plumbing_bundle, capsys,
                                                                     failure, error):
    files = mr_series(tmp_path / "in", 2, seed=f"dimse-{failure}")
    with pacs(**failure) as scp:
        dests = {"dest": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}}
        config = node_config(tmp_path, plumbing_bundle(), destinations=dests, dispatch=BACKOFF,
                             assembly={"quiet_s": 0.5})
        with running_node(config) as node:
            _send(node.port, files)
            record = _dead_letter(node, error)
            _check_backoff(record["destinations"]["dest"]["history"], scp.associations)
            assert scp.stored == {}
            scp.status, scp.refuse = 0, False  # the PACS recovers
            uids = _retry_and_deliver(node, config, record, capsys)
            assert scp.stored == dict.fromkeys(uids, 1) and len(uids) == 1


@pytest.mark.parametrize(("status", "error"), [
    (500, r"answered HTTP 500"),
    (409, r"answered HTTP 409"),
    (400, r"answered HTTP 400"),
    (202, r"answered HTTP 202 but did not store 1 of 1 instances: [\d.]+ \(reason 0xA700\)"),
], ids=["500", "409", "400", "202-with-failures"])
def test_stow_failure_retries_with_capped_backoff_then_dead_letters(tmp_path, plumbing_bundle, capsys,
                                                                    status, error):
    files = mr_series(tmp_path / "in", 2, seed=f"stow-{status}")
    with StowServer(status) as stow:
        dests = {"dest": {"type": "stow", "url": stow.url}}
        config = node_config(tmp_path, plumbing_bundle(), destinations=dests, dispatch=BACKOFF,
                             assembly={"quiet_s": 0.5})
        with running_node(config) as node:
            _send(node.port, files)
            record = _dead_letter(node, rf"STOW-RS {re.escape(stow.url)} {error}")
            _check_backoff(record["destinations"]["dest"]["history"], stow.requests)
            assert stow.stored == {}
            stow.status = 200  # the archive recovers
            uids = _retry_and_deliver(node, config, record, capsys)
            assert stow.stored == dict.fromkeys(uids, 1) and len(uids) == 1
