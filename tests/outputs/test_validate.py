"""The dciodvfy wrapper reports errors: none on a valid SR, the broken attribute on a bad one.

Every "0 errors" assertion in the output tests relies on this wrapper seeing dciodvfy's
error lines; these tests show it does. dciodvfy is installed by ``make deps``: when it is
missing these tests fail (the wrapper raises), they never skip.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from conftest import mr_series
from pydicom.dataelem import DataElement
from pydicom.sr.codedict import codes

from dicomnode.errors import OutputError
from dicomnode.outputs.validate import dciodvfy_errors


@pytest.fixture(scope="module")
def good_sr(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    """A valid TID 1500 Comprehensive 3D SR (highdicom) on a two-image MR series."""
    folder = tmp_path_factory.mktemp("validate")
    evidence = [pydicom.dcmread(path) for path in mr_series(folder / "mr", 2, seed="validate")]
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="test")))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="series"),
        measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=1.0, unit=codes.UCUM.SquareMillimeter)])
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=9,
                                   sop_instance_uid=hd.UID(), instance_number=1, manufacturer="dicomnode-tests",
                                   is_complete=True, is_final=False, is_verified=False)


def _saved(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _without_completion_flag(ds: pydicom.Dataset) -> pydicom.Dataset:
    del ds.CompletionFlag  # Type 1 in the SR Document General module
    return ds


def _modality_as_lo(ds: pydicom.Dataset) -> pydicom.Dataset:
    ds[0x00080060] = DataElement(0x00080060, "LO", "SR")  # Modality is CS
    return ds


def test_valid_sr_has_no_errors(good_sr, tmp_path):
    assert dciodvfy_errors(_saved(good_sr, tmp_path / "good.dcm")) == []


@pytest.mark.parametrize(("damage", "expected"), [
    (_without_completion_flag, r"^Error - </CompletionFlag\(0040,a491\)> - Missing attribute for Type 1 Required"),
    (_modality_as_lo, r"^Error - </Modality\(0008,0060\)> - Invalid Value Representation LO \(CS Required\)"),
], ids=["type-1-attribute-missing", "wrong-vr"])
def test_broken_sr_errors_are_reported(good_sr, tmp_path, damage, expected):
    path = _saved(damage(copy.deepcopy(good_sr)), tmp_path / "bad.dcm")
    errors = dciodvfy_errors(path)
    assert errors and all(line.startswith("Error") for line in errors)
    assert any(re.search(expected, line) for line in errors), errors


def test_allow_drops_only_the_named_errors(good_sr, tmp_path):
    path = _saved(_modality_as_lo(_without_completion_flag(copy.deepcopy(good_sr))), tmp_path / "bad.dcm")
    errors = dciodvfy_errors(path, allow=["CompletionFlag"])
    assert errors and not any("CompletionFlag" in line for line in errors)
    assert all("Modality" in line for line in errors)


def test_missing_dciodvfy_is_an_error_not_a_pass(good_sr, tmp_path, monkeypatch):
    path = _saved(good_sr, tmp_path / "good.dcm")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(OutputError, match="dciodvfy not found: install Debian package 'dicom3tools'"):
        dciodvfy_errors(path)
