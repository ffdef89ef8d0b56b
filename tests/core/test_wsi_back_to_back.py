"""A dozen varied synthetic slides back to back through one node: every job ``done`` (issue 8).

dcmtk ``storescu -R -xy`` sends each slide as a pyramid of JPEG instances, one right after
the other, to a node running the bundled WSI demo model with INFO logging (the set-up in
which back-to-back slides used to segfault the worker while it encoded SEG frames). Sizes,
resolutions and deposit layouts vary (negatives, one large deposit, several small ones,
a deposit at the border), so the SEG grids, sparse/empty frame sets and preview sizes vary
too. Every job must end ``done`` on its first run, and its SEG and SR reference the slide.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import REPO, node_config, running_node
from netutil import wait_for

from dicomnode.errors import SpoolError
from dicomnode.synth.wsi import generate_slide

pytestmark = [pytest.mark.slow, pytest.mark.serial]

WSI_SOP = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: (width, height) mm, µm/px, deposits (x mm, y mm, diameter mm)
SLIDES = [
    ((2.5, 2.0), 1.0, []),
    ((3.0, 2.4), 1.0, [(1.5, 1.2, 1.6)]),
    ((2.2, 2.2), 1.0, [(0.7, 0.7, 0.5), (1.5, 1.4, 0.3)]),
    ((1.6, 2.8), 1.0, [(0.8, 2.2, 0.15)]),
    ((3.4, 1.8), 1.0, []),
    ((2.0, 2.0), 0.5, [(1.0, 1.0, 0.8)]),
    ((2.6, 2.6), 1.0, [(0.3, 0.3, 0.5)]),  # near the slide's corner
    ((1.8, 1.4), 1.0, []),
    ((3.0, 3.0), 1.0, [(1.0, 1.0, 0.4), (2.0, 2.0, 0.4), (1.0, 2.2, 0.25)]),
    ((2.4, 1.6), 0.5, []),
    ((2.8, 2.0), 1.0, [(1.4, 1.0, 2.2)]),
    ((1.5, 1.5), 1.0, [(0.75, 0.75, 0.6)]),
]


def _config(tmp_path: Path) -> Path:
    routes = [{"name": "wsi", "pipeline": "wsi-two-stage", "model": "wsi-ln-demo", "destinations": ["outbox"],
               "match": {"all": [{"tag": "SOPClassUID", "equals": WSI_SOP}]}}]
    return node_config(tmp_path, tmp_path, models={"wsi-ln-demo": {"path": str(REPO / "models" / "wsi-ln-demo")}},
                       routes=routes, worker={"onnx_providers": ["CPUExecutionProvider"]},
                       assembly={"quiet_s": 5, "max_wait_s": 300})


def _finished(node, count: int) -> list[dict] | None:
    try:
        records = [node.spool.read_job(j) for j in node.spool.job_ids()]
    except SpoolError:  # a job being created
        return None
    ended = [r for r in records if r["state"] in ("done", "failed", "dead")]
    return records if len(records) == count and len(ended) == count else None


def test_a_dozen_slides_back_to_back_all_done(tmp_path: Path) -> None:
    slides = [generate_slide(tmp_path / f"slide-{i}", 500 + i, size_mm=size, mpp=mpp, deposits=deps)
              for i, (size, mpp, deps) in enumerate(SLIDES)]
    with running_node(_config(tmp_path)) as node:
        for slide in slides:
            sent = subprocess.run(["storescu", "-aec", "DICOMNODE", "-R", "-xy", "127.0.0.1", str(node.port),
                                   *map(str, slide.files)], capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stderr
        records = wait_for(lambda: _finished(node, len(SLIDES)), timeout=600)
    assert [(r["state"], r["runs"], r.get("crashes", 0)) for r in records] == [("done", 1, 0)] * len(SLIDES), \
        [(r["job_id"], r["state"], r["error"]) for r in records]
    series = {pydicom.dcmread(s.files[0], stop_before_pixels=True).SeriesInstanceUID for s in slides}
    assert {r["series_uid"] for r in records} == series
    for record in records:
        outputs = node.spool.job_dir(record["job_id"]) / "outputs"
        kinds = sorted(p.name.split("-")[0] for p in outputs.glob("*.dcm"))
        assert kinds == ["SEG", "SR"] and (outputs / "preview.png").is_file(), sorted(outputs.iterdir())
        for path in outputs.glob("*.dcm"):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == record["study_uid"]
            refs = {str(s.SeriesInstanceUID) for s in ds.ReferencedSeriesSequence} if "ReferencedSeriesSequence" \
                in ds else {str(s.SeriesInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence[0]
                            .ReferencedSeriesSequence}
            assert record["series_uid"] in refs  # the SR's evidence also lists its SEG
