"""A refused series through a real node into a real PACS (Orthanc): the reader gets the
"not analysed" SR in the study, dciodvfy-clean, and no SEG (MRI and WSI, demo models)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest
from conftest import REPO, running_node
from netutil import wait_for
from orthanc import demo_node_config, netns_skip, orthanc
from pydicom.uid import generate_uid

from dicomnode.outputs.validate import dciodvfy_available, dciodvfy_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow, netns_skip()]

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"


def _config(tmp_path: Path, dicom_port: int) -> str:
    return demo_node_config(tmp_path, dicom_port)


def _short_t2(testdata: Path, folder: Path) -> str:
    """The real axial T2, first 10 slices (30 mm) as a new series: too short for the model."""
    folder.mkdir()
    series = generate_uid()
    files = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    for ds in sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))[:10]:
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm")
    return series


def _states(node: object) -> list[str]:
    spool = node.spool  # type: ignore[attr-defined]
    return sorted(spool.read_job(j)["state"] for j in spool.job_ids())


def test_refused_mr_and_slide_reach_orthanc_as_not_analysed_reports(testdata: Path, tmp_path: Path) -> None:
    mr_series = _short_t2(testdata, tmp_path / "mr")
    slide = tmp_path / "slide"
    shutil.copytree(testdata / "wsi" / "wg26-3dhistech-bpaec-fluorescence", slide,
                    ignore=shutil.ignore_patterns("*.txt"))
    slide_series = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in slide.iterdir()}
    with orthanc(tmp_path / "orthanc") as pacs, running_node(_config(tmp_path, pacs.dicom_port)) as node:
        subprocess.run([sys.executable, "-m", "dicomnode", "replay", str(tmp_path / "mr"), str(slide), "--to",
                        f"127.0.0.1:{node.port}", "--quiet"], capture_output=True, text=True, cwd=REPO,
                       timeout=300, check=False)
        wait_for(lambda: _states(node) == ["refused", "refused"], timeout=300, interval=1)
        stored = []
        for oid in pacs.get("/instances"):
            with urllib.request.urlopen(f"{pacs.url}/instances/{oid}/file", timeout=30) as response:
                stored.append(response.read())
    outputs = [(pydicom.dcmread(io.BytesIO(raw)), raw) for raw in stored]  # Orthanc holds outputs only
    assert sorted(str(ds.SOPClassUID) for ds, _ in outputs) == [ENHANCED_SR, ENHANCED_SR]  # no SEG, no findings SR
    sources = {str(s.SeriesInstanceUID) for ds, _ in outputs for study in ds.CurrentRequestedProcedureEvidenceSequence
               for s in study.ReferencedSeriesSequence}
    assert mr_series in sources and slide_series & sources
    for ds, raw in outputs:
        assert "NOT ANALYSED" in ds.SeriesDescription
        if dciodvfy_available():
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            path.write_bytes(raw)
            assert dciodvfy_errors(path) == []
