"""dcmtk storescu → node → Orthanc (DIMSE and STOW-RS), verified through Orthanc's REST API."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, node_config, running_node
from netutil import wait_for
from orthanc import netns_skip, orthanc

pytestmark = [pytest.mark.integration,
              netns_skip()]


def _job_states(node) -> list[str]:
    states = []
    for job_id in node.spool.job_ids():
        try:
            states.append(node.spool.read_job(job_id)["state"])
        except Exception:  # noqa: BLE001 - job.json being created
            states.append("creating")
    return states


def test_storescu_t2_series_results_reach_orthanc_exactly_once(tmp_path, plumbing_bundle, testdata):
    series = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    with orthanc(tmp_path / "orthanc") as pacs:
        dests = {"pacs": {"type": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.dicom_port},
                 "web": {"type": "stow", "url": f"{pacs.url}/dicom-web/studies"}}
        with running_node(node_config(tmp_path, plumbing_bundle(), destinations=dests)) as node:
            for round_ in (1, 2):  # the second replay must not duplicate anything in PACS
                sent = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port),
                                       *map(str, series)], capture_output=True, text=True, timeout=120)
                assert sent.returncode == 0, sent.stderr
                wait_for(lambda r=round_: _job_states(node) == ["done"] * r, timeout=120)
        srs = pacs.instances("SR")
        assert len(srs) == 1
        stats = pacs.get("/statistics")
        assert stats["CountInstances"] == 1


def test_replay_real_testdata_is_grouped_and_routed(tmp_path, testdata):
    """The default routing rules on real data: T2 → mri-lln, WSI pyramids → wsi-two-stage,
    ADC (not T2) → unmatched. Uses `dicomnode replay` as the sender."""
    mr = testdata / "mr"
    paths = [mr / "prostate-t2-axial-siemens-verio", mr / "prostate-adc-oblique-ge-qin",
             testdata / "wsi" / "cmu1-small-region-pyramid-wsi2dcm"]
    models = {"lln-t2-demo": {"path": str(REPO / "models" / "lln-t2-demo")},
              "wsi-ln-demo": {"path": str(REPO / "models" / "wsi-ln-demo")}}
    config = node_config(tmp_path, tmp_path, models=models, routes=_default_routes())
    with running_node(config) as node:
        out = subprocess.run([sys.executable, "-m", "dicomnode", "replay", *map(str, paths), "--to",
                              f"127.0.0.1:{node.port}", "--concurrency", "3", "--quiet"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "0x0000 Success" in out.stdout
        wait_for(lambda: len(node.spool.job_ids()) == 2 and node.assembler.pending() == 0, timeout=120)
        routes = {}
        for job_id in node.spool.job_ids():
            record = node.spool.read_job(job_id)
            inputs = list((node.spool.job_dir(job_id) / "input").glob("*.dcm"))
            routes[record["route"]] = (record["pipeline"], len(inputs))
        assert routes["t2-pelvis"] == ("mri-lln", 40)
        assert routes["wsi"] == ("wsi-two-stage", 12)
        assert len(list(node.spool.root.glob("unmatched/*/*.dcm"))) == 20


def _default_routes():
    import yaml

    from dicomnode.config import default_config_text
    return yaml.safe_load(default_config_text())["routes"]
