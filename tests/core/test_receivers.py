"""``node.receivers: N``: receiver processes on the node's port (SO_REUSEPORT), one spool."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from conftest import MR_SOP, mr_series, node_config, running_node
from netutil import store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian

ASSOCIATIONS = 16


def _send(port: int, files: list[Path]) -> list[int]:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    statuses = [int(assoc.send_c_store(f).Status) for f in files]
    assoc.release()
    return statuses


def _jobs_by_series(node) -> dict[str, int]:
    found = {}
    for job_id in node.spool.job_ids():
        inputs = list((node.spool.job_dir(job_id) / "input").glob("*.dcm"))
        series = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in inputs}
        assert len(series) == 1, f"job {job_id} mixes series {series}"
        found[series.pop()] = len(inputs)
    return found


def test_receivers_share_the_port_and_the_spool(tmp_path, plumbing_bundle):
    """16 associations to a node with 2 receivers: every instance acknowledged and assembled,
    one job per series even when one series' instances arrive on both processes at once,
    and the child's counts reach the node's /metrics (2^-16: all 16 landing on one socket)."""
    shared = mr_series(tmp_path / "shared", 32, seed="receivers-shared")  # split over 8 associations
    own = [mr_series(tmp_path / f"own{i}", 4, seed=f"receivers-{i}") for i in range(8)]
    parts = [shared[i::8] for i in range(8)] + own
    config = node_config(tmp_path, plumbing_bundle(), node={"receivers": 2}, assembly={"quiet_s": 3})
    with running_node(config) as node:
        assert len(node.receivers.pids()) == 1
        with ThreadPoolExecutor(ASSOCIATIONS) as pool:
            results = list(pool.map(lambda files: _send(node.port, files), parts))
        assert all(set(statuses) == {0} for statuses in results)
        wait_for(lambda: len(node.spool.job_ids()) == 9 and node.assembler.pending() == 0, timeout=60)
        expected = {str(pydicom.dcmread(files[0]).SeriesInstanceUID): len(files) for files in [shared, *own]}
        assert _jobs_by_series(node) == expected
        assert node.metrics.value("dicomnode_instances_received_total", receiver="1") > 0
        total = node.metrics.value("dicomnode_instances_received_total") + \
            node.metrics.value("dicomnode_instances_received_total", receiver="1")
        assert total == 64


def test_a_receiver_that_dies_is_started_again(tmp_path, plumbing_bundle):
    config = node_config(tmp_path, plumbing_bundle(), node={"receivers": 2}, assembly={"quiet_s": 60})
    with running_node(config) as node:
        [first] = node.receivers.pids()
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: node.receivers.pids() and node.receivers.pids()[0] != first
                 and node.metrics.value("dicomnode_receiver_restarts_total") == 1, timeout=30)
        files = mr_series(tmp_path / "after", 8, seed="after-restart")
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda f: _send(node.port, [f]), files))
        assert results == [[0]] * 8
