"""Refused jobs: the job record's ``refused`` state, and a refused series through a real node
(mri-lln demo model) — the "not analysed" SR by default, nothing with ``on_refused: silent``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from conftest import MR_SOP, REPO, node_config, running_node
from netutil import pacs, store_association, wait_for
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode import jobs
from dicomnode.errors import JobStateError
from dicomnode.jobs import DeliveryState, Job, JobState
from dicomnode.outputs.validate import dciodvfy_available, dciodvfy_errors


def _job(destinations: list[str]) -> Job:
    return jobs.start_run(jobs.new_job("j1", route="r", pipeline="mri-lln", model="m", model_path="/m",
                                       model_version="1", study_uid="1.2", series_uid="1.2.3", instances=3,
                                       destinations=destinations, created=0.0))


def test_refuse_with_a_report_delivers_it_then_ends_refused() -> None:
    job = jobs.refuse(_job(["a", "b"]), "input refused: plane: …", ["SR-1.dcm"], {"refused": True}, 0.5)
    assert job.state is JobState.DISPATCHING and job.refusal.startswith("input refused")
    job = jobs.settle(jobs.delivered(job, "a", now=1.0))
    assert job.state is JobState.DISPATCHING  # b still open
    job = jobs.settle(jobs.delivered(job, "b", now=2.0))
    assert job.state is JobState.REFUSED and job.state.ended
    assert Job.from_json(job.to_json()) == job


def test_silent_refusal_ends_at_once_and_retry_runs_it_again() -> None:
    job = jobs.refuse(_job(["a"]), "input refused: x", [], {}, 0.1)
    assert job.state is JobState.REFUSED
    with pytest.raises(JobStateError):
        jobs.finish_run(job, [], {}, 0.0)
    again = jobs.retry(jobs.settle(jobs.delivered(jobs.refuse(_job(["a"]), "r", ["x.dcm"], {}, 0.1), "a", now=1.0)))
    assert again.state is JobState.QUEUED and again.refusal == ""
    assert again.destinations["a"].state is DeliveryState.PENDING  # the next run's outputs are sent


def _refusable_t2(testdata: Path, folder: Path, description: str) -> list[Path]:
    """The real axial T2 cut to its first 10 slices (30 mm): a new series the demo model refuses."""
    folder.mkdir()
    series = generate_uid()
    files = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    datasets = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))[:10]
    out = []
    for ds in datasets:
        ds.SeriesInstanceUID, ds.SeriesDescription = series, description
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out.append(folder / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(out[-1])
    return out


def _send(port: int, files: list[Path]) -> None:
    assoc = store_association(port, [(MR_SOP, ExplicitVRLittleEndian)])
    assert [int(assoc.send_c_store(f).Status) for f in files] == [0] * len(files)
    assoc.release()


def _states(node: object) -> list[str]:
    spool = node.spool  # type: ignore[attr-defined]
    return sorted(spool.read_job(j)["state"] for j in spool.job_ids())


def test_refused_series_gets_a_not_analysed_report_or_silence(testdata: Path, tmp_path: Path) -> None:
    report = _refusable_t2(testdata, tmp_path / "report", "AX T2 REPORT")
    silent = _refusable_t2(testdata, tmp_path / "silent", "AX T2 SILENT")
    with pacs() as scp:
        dests = {"outbox": {"type": "folder", "path": str(tmp_path / "outbox")},
                 "pacs": {"type": "dimse", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}}
        routes = [{"name": "quiet", "pipeline": "mri-lln", "model": "lln", "destinations": list(dests),
                   "on_refused": "silent", "match": {"all": [{"tag": "SeriesDescription", "regex": "SILENT"}]}},
                  {"name": "t2", "pipeline": "mri-lln", "model": "lln", "destinations": list(dests),
                   "match": {"all": [{"tag": "Modality", "equals": "MR"}]}}]
        config = node_config(tmp_path, REPO / "models" / "lln-t2-demo", destinations=dests, routes=routes,
                             models={"lln": {"path": str(REPO / "models" / "lln-t2-demo")}},
                             worker={"device": "cpu"})
        with running_node(config) as node:
            _send(node.port, report)
            _send(node.port, silent)
            wait_for(lambda: _states(node) == ["refused", "refused"], timeout=240, interval=0.5)
            metrics = node.render_metrics()
        assert list(scp.stored.values()) == [1]  # the report only; nothing for the silent route
        (sr,) = scp.datasets.values()
    assert sr.Modality == "SR" and sr.SeriesInstanceUID != report[0] and "NOT ANALYSED" in sr.SeriesDescription
    assert str(sr.StudyInstanceUID) == str(pydicom.dcmread(report[0]).StudyInstanceUID)
    texts = [str(item.TextValue) for item in sr.ContentSequence if item.ValueType == "TEXT"]
    assert any(t.startswith("NOT ANALYSED") and "lln-t2-demo" in t for t in texts)
    assert "Not analysed because min_slices: found 10, expected ≥ 12" in texts
    assert "NOT FOR CLINICAL USE" in texts
    written = list((tmp_path / "outbox").rglob("*.dcm"))
    assert [p.name.split("-")[0] for p in written] == ["SR"]  # no SEG, no findings SR
    if dciodvfy_available():
        assert dciodvfy_errors(written[0]) == []
    assert 'dicomnode_jobs_refused_total{reason="min_slices",route="t2"} 1' in metrics
    assert 'dicomnode_jobs_refused_total{reason="min_coverage_mm",route="quiet"} 1' in metrics
    assert 'dicomnode_jobs{state="refused"} 2' in metrics
    listing = subprocess.run([sys.executable, "-m", "dicomnode", "jobs", "--config", str(config), "--state",
                              "refused"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert listing.count("not analysed: min_slices: found 10, expected ≥ 12") == 2, listing


def test_refused_jobs_expire_like_done_ones(tmp_path: Path) -> None:
    from dicomnode.jobstore import FileJobStore
    from dicomnode.spool import Spool

    store = FileJobStore(Spool(tmp_path / "spool"))
    store.create(jobs.refuse(_job(["a"]), "input refused: x", [], {}, 0.1), None)
    updated = store.get("j1").updated
    assert store.expire(86400, now=updated + 60) == 0
    assert store.expire(86400, now=updated + 2 * 86400) == 1 and store.ids() == []
