"""End to end with the real pipelines and demo models: clients → node → Orthanc.

MRI: dcmtk storescu sends the real T2 axial prostate series and a synthetic T2 study; the
mri-lln pipeline (nnU-Net demo model) runs; per source series Orthanc holds exactly the SR,
and where nodes were found also the SEG and the viewer SR.
WSI: ``dicomnode replay`` sends a synthetic slide and the CMU-1 pyramid; the wsi-two-stage
pipeline (ONNX demo models) runs; per slide Orthanc holds exactly one SEG and one SR, and
the PNG preview is written.

What Orthanc holds is read back from its stored files (SOP class, series number, the
source series each output references) and compared with what the node must deliver.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from conftest import REPO
from netutil import wait_for
from orthanc import demo_node_config, netns_skip, orthanc

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              netns_skip()]


def _config(tmp_path, pacs) -> str:
    return demo_node_config(tmp_path, pacs.dicom_port, outbox=True, job_timeout_s=900)


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


SEG = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
SR3D = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
#: (SeriesNumber, Modality, SOP Class) of each output kind (mri-lln SEG / SR / viewer SR, wsi-two-stage SEG / SR).
MRI_SEG, MRI_SR, MRI_VIEWER_SR = (901, "SEG", SEG), (902, "SR", SR3D), (903, "SR", SR3D)
WSI_SEG, WSI_SR = (9101, "SEG", SEG), (9102, "SR", SR3D)


def _stored(pacs) -> list[pydicom.Dataset]:
    """Every instance Orthanc holds, read back from the files it stored."""
    out = []
    for oid in pacs.get("/instances"):
        with urllib.request.urlopen(f"{pacs.url}/instances/{oid}/file", timeout=30) as response:
            out.append(pydicom.dcmread(io.BytesIO(response.read()), stop_before_pixels=True))
    return out


def _referenced_series(ds: pydicom.Dataset) -> set[str]:
    """Series an output references: a SEG's source series, an SR's evidence."""
    if ds.Modality == "SEG":
        return {str(s.SeriesInstanceUID) for s in ds.ReferencedSeriesSequence}
    return {str(s.SeriesInstanceUID) for study in ds.CurrentRequestedProcedureEvidenceSequence
            for s in study.ReferencedSeriesSequence}


def _delivered(stored: list[pydicom.Dataset]) -> dict[str, list[tuple[int, str, str]]]:
    """Per source series: the sorted (SeriesNumber, Modality, SOP Class) of its outputs.

    An output's source series is the one it references that is not itself an output (an
    SR's evidence also lists the SEG); each output must name exactly one.
    """
    outputs = {str(ds.SeriesInstanceUID) for ds in stored}
    found: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for ds in stored:
        (source,) = _referenced_series(ds) - outputs
        found[source].append((int(ds.SeriesNumber), str(ds.Modality), str(ds.SOPClassUID)))
    return {source: sorted(kinds) for source, kinds in found.items()}


def _series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _results(outbox: Path, pipeline: str) -> dict[str, dict]:
    """The folder destination's result.json files of ``pipeline``, by source series."""
    found = [json.loads(p.read_text()) for p in outbox.glob(f"*/*/{pipeline}/result.json")]
    return {r["series_uid"]: r for r in found}


def _check_pacs_against_outbox(pacs, stored: list[pydicom.Dataset], outbox: Path) -> None:
    """Orthanc holds one copy of each output the node wrote to its folder destination."""
    written = {p.name.split("-", 1)[1].removesuffix(".dcm") for p in outbox.glob("*/*/*/*.dcm")}
    assert sorted(str(ds.SOPInstanceUID) for ds in stored) == sorted(written)
    assert pacs.get("/statistics")["CountInstances"] == len(written)
    for ds in stored:
        assert "NOT FOR CLINICAL USE" in ds.SeriesDescription


def test_mri_storescu_to_orthanc(tmp_path, testdata):
    from conftest import running_node

    from dicomnode.config import load_config  # noqa: F401 - config validated by running_node
    from dicomnode.synth.mr import generate_case

    case = generate_case(11)
    synthetic = case.write(tmp_path / "synthetic")
    t2 = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    with orthanc(tmp_path / "orthanc") as pacs, running_node(_config(tmp_path, pacs)) as node:
        for files in (t2, synthetic):
            sent = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), *map(str, files)],
                                  capture_output=True, text=True, timeout=300)
            assert sent.returncode == 0, sent.stderr
        wait_for(lambda: _done(node, 2), timeout=900, interval=1)
        stored = _stored(pacs)
        results = _results(tmp_path / "outbox", "mri-lln")
        assert sorted(results) == sorted({_series_uid(t2[0]), _series_uid(synthetic[0])})
        # the phantom has nodes (its truth): SEG + SR + viewer SR; the real T2 gets what its
        # findings say: the same three where the model found a node, else the SR alone
        assert case.nodes
        full, sr_only = sorted([MRI_SEG, MRI_SR, MRI_VIEWER_SR]), [MRI_SR]
        t2_nodes = results[_series_uid(t2[0])]["findings"]["n_nodes"]
        assert _delivered(stored) == {_series_uid(synthetic[0]): full,
                                      _series_uid(t2[0]): full if t2_nodes else sr_only}
        _check_pacs_against_outbox(pacs, stored, tmp_path / "outbox")


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
        stored = _stored(pacs)
        sources = (_series_uid(slide.files[0]), _series_uid(next(cmu1.glob("*.dcm"))))
        assert _delivered(stored) == {uid: [WSI_SEG, WSI_SR] for uid in sources}
        _check_pacs_against_outbox(pacs, stored, tmp_path / "outbox")
    results = _results(tmp_path / "outbox", "wsi-two-stage")
    assert sorted(results) == sorted(sources)
    assert results[sources[0]]["findings"]["class"] == slide.deposits[0].category == "micro"  # the 0.8 mm deposit
    previews = list((tmp_path / "outbox").glob("*/*/wsi-two-stage/preview.png"))
    assert len(previews) == 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in previews)
    assert "wsi-two-stage" in out.stdout
