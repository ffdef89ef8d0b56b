"""End to end with the real pipelines and demo models: clients → node → Orthanc.

MRI: dcmtk storescu sends the real T2 axial prostate series and a synthetic T2 study; the
mri-lln pipeline (nnU-Net demo model) runs; SEG + SR arrive in Orthanc.
WSI: ``dicomnode replay`` sends a synthetic slide and the CMU-1 pyramid; the wsi-two-stage
pipeline (ONNX demo models) runs; SEG + SR arrive in Orthanc and the PNG preview is written.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from netutil import free_port, wait_for
from orthanc import orthanc, private_netns

from dicomnode.config import default_config_text

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not private_netns(), reason="Orthanc binds all interfaces: needs the private "
                                 "network namespace that `make test` provides (unshare -n)")]


def _config(tmp_path, pacs) -> str:
    data = yaml.safe_load(default_config_text())
    for route in data["routes"]:
        route["destinations"] = ["outbox", "pacs"]
    data.update({
        "node": {"port": free_port(), "allow": [{"ae_title": "*", "network": "127.0.0.0/8"}]},
        "spool": {"path": str(tmp_path / "spool"), "min_free_mb": 64},
        "assembly": {"quiet_s": 2, "max_wait_s": 300},
        "models": {"lln-t2-demo": {"path": str(REPO / "models" / "lln-t2-demo")},
                   "wsi-ln-demo": {"path": str(REPO / "models" / "wsi-ln-demo")}},
        "destinations": {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")},
                         "pacs": {"type": "dimse", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                  "port": pacs.dicom_port}},
        "worker": {"device": "cpu", "job_timeout_s": 900},
        "http": {"port": 0}, "log": {"format": "console", "level": "INFO"},
    })
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _done(node, count: int) -> bool:
    states = []
    for job_id in node.spool.job_ids():
        try:
            states.append(node.spool.read_job(job_id)["state"])
        except Exception:  # noqa: BLE001 - job.json being written
            return False
    failed = [node.spool.read_job(j) for j in node.spool.job_ids() if node.spool.read_job(j)["state"] == "failed"]
    assert not failed, [f["error"] for f in failed]
    return states.count("done") == count


def _series_of(pacs, modality: str) -> list[dict]:
    return pacs.post("/tools/find", {"Level": "Series", "Query": {"Modality": modality}, "Expand": True})


def test_mri_storescu_to_orthanc(tmp_path, testdata):
    from conftest import running_node

    from dicomnode.config import load_config  # noqa: F401 - config validated by running_node
    from dicomnode.synth.mr import generate_case

    synthetic = generate_case(11).write(tmp_path / "synthetic")
    t2 = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    with orthanc(tmp_path / "orthanc") as pacs, running_node(_config(tmp_path, pacs)) as node:
        for files in (t2, synthetic):
            sent = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), *map(str, files)],
                                  capture_output=True, text=True, timeout=300)
            assert sent.returncode == 0, sent.stderr
        wait_for(lambda: _done(node, 2), timeout=900, interval=1)
        srs, segs = _series_of(pacs, "SR"), _series_of(pacs, "SEG")
        assert len(srs) >= 3  # a report per source series (incl. "no nodes"), + a viewer SR where nodes were found
        assert len(segs) >= 1  # the synthetic study has nodes: its SEG arrived
        for series in srs + segs:
            assert "NOT FOR CLINICAL USE" in series["MainDicomTags"].get("SeriesDescription", "")
        findings = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*/*/mri-lln/result.json")]
        assert len(findings) == 2


def test_wsi_replay_to_orthanc_with_preview(tmp_path, testdata):
    from conftest import running_node

    from dicomnode.synth.wsi import generate_slide

    slide = generate_slide(tmp_path / "slide", 5, size_mm=(3.0, 3.0), deposits=[(1.5, 1.5, 0.8)])
    cmu1 = testdata / "wsi" / "cmu1-small-region-pyramid-wsi2dcm"
    with orthanc(tmp_path / "orthanc") as pacs, running_node(_config(tmp_path, pacs)) as node:
        out = subprocess.run([sys.executable, "-m", "dicomnode", "replay", str(slide.folder), str(cmu1), "--to",
                              f"127.0.0.1:{node.port}", "--quiet", "--wait-results", str(tmp_path / "outbox"),
                              "--timeout", "900"], capture_output=True, text=True, cwd=REPO, timeout=1000)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: _done(node, 2), timeout=300, interval=1)
        assert len(_series_of(pacs, "SEG")) == 2 and len(_series_of(pacs, "SR")) == 2
    previews = list((tmp_path / "outbox").glob("*/*/wsi-two-stage/preview.png"))
    assert len(previews) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in previews)
    assert "wsi-two-stage" in out.stdout
