"""The mri-lln guard: each requirement of the demo bundle with a series that passes and one
that fails, built from the real T2 series (cropped, relabelled) and the synthetic generator;
a refused series never reaches the model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.errors import InputRefused
from dicomnode.inference.manifest import load_bundle
from dicomnode.pipelines.base import PipelineContext
from dicomnode.pipelines.guard import GuardReport, check_files
from dicomnode.synth.mr import generate_case

DEMO = load_bundle(Path(__file__).resolve().parents[3] / "models" / "lln-t2-demo")


def _check(files: list[Path]) -> GuardReport:
    report = check_files("mri-lln", DEMO, files)
    assert report is not None
    return report


def _failed(report: GuardReport) -> set[str]:
    return {v.requirement for v in report.failed}


def _tilted(folder: Path, degrees: float) -> list[Path]:
    """The synthetic phantom rotated rigidly about the patient's left-right axis."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    case = generate_case(11)
    for ds in case.datasets:
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*rot @ iop[:3], *rot @ iop[3:])]
        ds.ImagePositionPatient = [round(float(v), 4) for v in rot @ np.asarray(ds.ImagePositionPatient, float)]
    return case.write(folder)


def _t2(testdata: Path, folder: Path, keep: slice = slice(None), **changes: object) -> list[Path]:
    """The real axial T2 series (slices ``keep``), with header ``changes``, written to ``folder``."""
    folder.mkdir()
    files = sorted((testdata / "mr" / "prostate-t2-axial-siemens-verio").glob("*.dcm"))
    datasets = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2]))
    out = []
    for ds in datasets[keep]:
        for key, value in changes.items():
            setattr(ds, key, value)
        out.append(folder / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(out[-1])
    return out


def test_synthetic_phantom_is_accepted_without_flags(tmp_path: Path) -> None:
    report = _check(generate_case(11).write(tmp_path))
    assert not report.refused and report.flags == ()
    assert report.measures["tilt_deg"] == 0.0 and report.measures["coverage_mm"] == 72.0
    assert {v.requirement for v in report.verdicts} >= {"modality", "plane", "spacing_mm.row", "min_slices",
                                                         "min_coverage_mm", "fov_mm", "header.EchoTime"}


def test_real_axial_t2_is_accepted_with_an_intensity_flag(testdata: Path, tmp_path: Path) -> None:
    """Its acquisition is what the model asks for (axial, 0.5 x 0.5 x 3 mm, 120 mm, TE 100 /
    TR 4800), but its intensities lie far from the phantoms the demo model was trained on."""
    report = _check(_t2(testdata, tmp_path / "t2"))
    assert not report.refused, report.reason()
    assert report.measures["intensity"]["z"] < -2.0
    assert [f for f in report.flags if f.startswith("intensity")], report.flags


@pytest.mark.parametrize(("degrees", "refused", "flagged"), [(15.0, False, True), (30.0, True, True),
                                                              (90.0, True, True)])
def test_plane_is_judged_from_the_orientation(tmp_path: Path, degrees: float, refused: bool, flagged: bool) -> None:
    report = _check(_tilted(tmp_path, degrees))
    assert report.measures["tilt_deg"] == pytest.approx(degrees, abs=0.01)
    assert _failed(report) == ({"plane"} if refused else set())
    assert any(f.startswith("tilt") for f in report.flags) == flagged


def test_coarse_spacing_is_refused(tmp_path: Path) -> None:
    report = _check(generate_case(3, shape=(24, 30, 30), spacing_mm=(3.0, 4.0, 4.0)).write(tmp_path))
    assert _failed(report) == {"spacing_mm.row", "spacing_mm.column"}
    assert "found 4 mm, expected 0.375–3 mm" in report.reason()


def test_small_field_of_view_is_refused(tmp_path: Path) -> None:
    report = _check(generate_case(3, shape=(24, 60, 60)).write(tmp_path))  # 90 mm at 1.5 mm
    assert _failed(report) == {"fov_mm"}


def test_cropped_series_fails_slices_and_coverage(testdata: Path, tmp_path: Path) -> None:
    report = _check(_t2(testdata, tmp_path / "t2", slice(0, 10)))  # 10 slices, 30 mm
    assert _failed(report) == {"min_slices", "min_coverage_mm"}
    assert "min_coverage_mm: found 30 mm, expected ≥ 45 mm" in report.reason()


def test_header_weighting_is_checked(testdata: Path, tmp_path: Path) -> None:
    t1 = _check(_t2(testdata, tmp_path / "t1", EchoTime=12, RepetitionTime=500))
    assert _failed(t1) == {"header.EchoTime", "header.RepetitionTime"}
    missing = _check(_t2(testdata, tmp_path / "none", EchoTime=None))
    assert _failed(missing) == {"header.EchoTime"} and "found missing" in missing.reason()


def test_refused_series_never_reaches_the_model(testdata: Path, tmp_path: Path) -> None:
    """The real pipeline raises before inference: no label map, no SEG, no findings."""
    from dicomnode.pipelines.mri_lln import create

    pipeline = create(DEMO, {"device": "cpu"})
    files = _t2(testdata, tmp_path / "t2", slice(0, 10))
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    ctx = PipelineContext("mri-lln", ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp_path, job_id="g1")
    with pytest.raises(InputRefused, match="min_slices: found 10") as refused:
        pipeline.run(files, ctx)
    assert {v["requirement"] for v in refused.value.verdicts if not v["passed"]} == {"min_slices", "min_coverage_mm"}
    accepted = pipeline.run(generate_case(11).write(tmp_path / "ok"), ctx)
    assert accepted.findings["input"]["accepted"] is True and accepted.findings["input"]["flags"] == []


def test_derived_maps_are_refused(testdata: Path) -> None:
    """The real prostate ADC map (DERIVED, TE 65 / TR 2500 like a T2) is not a T2 image."""
    report = _check(sorted((testdata / "mr" / "prostate-adc-oblique-ge-qin").glob("*.dcm")))
    assert "original_only" in _failed(report)
    assert "original_only: found ImageType DERIVED" in report.reason()
