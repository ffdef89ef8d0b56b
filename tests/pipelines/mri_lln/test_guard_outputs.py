"""Out-of-distribution measures of accepted inputs: in findings.json, in the SR (not in the
viewer SR), and in ``dicomnode jobs``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from conftest import REPO, node_config

from dicomnode import jobs
from dicomnode.dicom.volume import load_volume, read_instances
from dicomnode.inference.manifest import load_bundle
from dicomnode.jobstore import FileJobStore
from dicomnode.outputs.validate import dciodvfy_available, dciodvfy_errors
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.mri_lln import build_outputs
from dicomnode.pipelines.mri_lln.guard import check_volume
from dicomnode.spool import Spool
from dicomnode.synth.mr import generate_case

DEMO = load_bundle(Path(__file__).resolve().parents[3] / "models" / "lln-t2-demo")


def _comments(ds: pydicom.Dataset) -> list[str]:
    return [str(text.TextValue) for item in ds.ContentSequence if item.ValueType == "CONTAINER"
            and item.ConceptNameCodeSequence[0].CodeValue == "C0034375" for text in item.ContentSequence]


def test_flagged_real_t2_says_so_in_findings_and_sr(testdata: Path, tmp_path: Path) -> None:
    datasets = read_instances(sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm")))
    volume = load_volume(datasets)
    guard = check_volume(volume, datasets[0], DEMO).to_json()
    ctx = PipelineContext("mri-lln", datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID, tmp_path)
    result = build_outputs(volume, np.zeros(volume.shape, np.uint8), DEMO, ctx, datasets, guard)
    assert result.findings["input"]["flags"] == guard["flags"] != []
    (sr,) = result.datasets
    notes = _comments(pydicom.dcmread(io.BytesIO(result.encoded[str(sr.SOPInstanceUID)])))
    assert notes[0].startswith("Input checked against the requirements of lln-t2-demo 0.2.0: accepted. Tilt 0.0°")
    assert "-3.34 SD from the training foreground mean" in notes[0]
    assert notes[1].startswith("Input flag (outside the training distribution, analysed anyway): intensity median")
    if dciodvfy_available():
        path = tmp_path / "sr.dcm"
        path.write_bytes(result.encoded[str(sr.SOPInstanceUID)])
        assert dciodvfy_errors(path) == []


def test_phantom_sr_has_measures_without_flags_and_viewer_sr_none(tmp_path: Path) -> None:
    case = generate_case(11)
    volume = load_volume(case.datasets)
    guard = check_volume(volume, case.datasets[0], DEMO).to_json()
    ds0 = case.datasets[0]
    ctx = PipelineContext("mri-lln", ds0.StudyInstanceUID, ds0.SeriesInstanceUID, tmp_path)
    result = build_outputs(volume, case.labels, DEMO, ctx, case.datasets, guard)
    seg, sr, viewer = result.datasets
    comments = _comments(sr)  # the guard's measures, then where the axes were measured (test_oblique.py)
    assert len(comments) == 2 and "(-0.13 SD" in comments[0] and comments[1].startswith("Short and long axes")
    assert _comments(viewer) == []


def test_jobs_listing_shows_the_flag(tmp_path: Path) -> None:
    config = node_config(tmp_path, tmp_path)
    store = FileJobStore(Spool(tmp_path / "spool"))
    job = jobs.start_run(jobs.new_job("job-flag", route="t2", pipeline="mri-lln", model="m", model_path="/m",
                                      model_version="1", study_uid="1.2", series_uid="1.2.3", instances=40,
                                      destinations=[], created=0.0))
    findings = {"input": {"accepted": True, "flags": ["intensity median -3.34 SD from the training mean"]}}
    store.create(jobs.settle(jobs.finish_run(job, [], findings, 1.0)), None)
    listing = subprocess.run([sys.executable, "-m", "dicomnode", "jobs", "--config", str(config)],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "flag: intensity median -3.34 SD from the training mean" in listing
