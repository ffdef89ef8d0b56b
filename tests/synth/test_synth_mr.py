"""Tests for the synthetic pelvic MR phantom generator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import config as pydicom_config
from scipy import ndimage

from dicomnode.synth.mr import STATIONS, SyntheticCase, generate_case


@pytest.fixture(autouse=True)
def _strict_writing():
    old = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.RAISE
    yield
    pydicom_config.settings.writing_validation_mode = old


def _bytes(case: SyntheticCase, tmp: Path) -> list[bytes]:
    return [p.read_bytes() for p in case.write(tmp)]


def test_same_seed_gives_identical_files_and_uids(tmp_path: Path) -> None:
    a, b = generate_case(7, oblique_deg=4.0), generate_case(7, oblique_deg=4.0)
    assert _bytes(a, tmp_path / "a") == _bytes(b, tmp_path / "b")
    assert np.array_equal(a.labels, b.labels)
    assert a.nodes == b.nodes
    c = generate_case(8, oblique_deg=4.0)
    assert c.datasets[0].SeriesInstanceUID != a.datasets[0].SeriesInstanceUID
    assert not np.array_equal(c.labels, a.labels)


def test_headers_are_complete_mr_t2() -> None:
    case = generate_case(1)
    uids = {ds.SOPInstanceUID for ds in case.datasets}
    assert len(uids) == len(case.datasets) == case.labels.shape[0]
    ds = case.datasets[0]
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert (ds.Modality, ds.ScanningSequence, ds.PhotometricInterpretation) == (
        "MR",
        "SE",
        "MONOCHROME2",
    )
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0
    assert str(ds.PatientName) == "SYNTHETIC^PHANTOM"
    assert "SYNTHETIC" in ds.SeriesDescription and "T2" in ds.SeriesDescription
    for keyword in (
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "PatientID",
        "StudyDate",
        "SliceThickness",
        "SpacingBetweenSlices",
        "PixelSpacing",
    ):
        assert keyword in ds, keyword
    assert ds.pixel_array.shape == case.labels.shape[1:]


@pytest.mark.parametrize("oblique", [0.0, 6.0])
def test_geometry_round_trips_through_simpleitk(tmp_path: Path, oblique: float) -> None:
    case = generate_case(3, shape=(20, 64, 72), spacing_mm=(3.0, 1.6, 1.5), oblique_deg=oblique)
    case.write(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    assert image.GetSize() == (72, 64, 20)
    assert np.allclose(image.GetSpacing(), (1.5, 1.6, 3.0), atol=1e-6)
    t = math.radians(oblique)
    row, col = (math.cos(t), math.sin(t), 0.0), (-math.sin(t), math.cos(t), 0.0)
    expected = np.array([row, col, (0.0, 0.0, 1.0)]).T.ravel()
    assert np.allclose(image.GetDirection(), expected, atol=1e-6)
    first = [float(v) for v in case.datasets[0].ImagePositionPatient]
    assert np.allclose(image.GetOrigin(), first, atol=1e-4)
    # The volume is centred on the pelvic midline x = 0.
    centre = image.TransformContinuousIndexToPhysicalPoint([35.5, 31.5, 9.5])
    assert abs(centre[0]) < 1e-4
    pixels = np.stack([ds.pixel_array for ds in case.datasets])
    assert np.array_equal(sitk.GetArrayFromImage(image), pixels)


def test_labels_match_listed_nodes(tmp_path: Path) -> None:
    case = generate_case(11, n_nodes=4, oblique_deg=3.0)
    case.write(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    components, count = ndimage.label(case.labels >= 4)
    assert count == len(case.nodes) == 4
    voxel_mm3 = float(np.prod(image.GetSpacing()))
    for node in case.nodes:
        index = image.TransformPhysicalPointToIndex(node.center_lps)
        label = int(case.labels[index[2], index[1], index[0]])
        assert label == (4 if node.positive else 5)
        component = components == components[index[2], index[1], index[0]]
        expected = 4 / 3 * math.pi * math.prod(node.axes_mm)
        assert 0.6 < component.sum() * voxel_mm3 / expected < 1.5
        assert node.short_axis_mm == pytest.approx(2 * node.axes_mm[1])
        assert node.long_axis_mm >= node.short_axis_mm
        assert (node.side == "left") == (node.center_lps[0] > 0)
        # The node sits in its station's region: the region label surrounds it.
        ring = ndimage.binary_dilation(component, iterations=2) & ~(case.labels >= 4)
        regions = case.labels[ring]
        assert np.bincount(regions, minlength=6)[STATIONS[node.station]] > 0


def test_nodes_cover_sizes_and_classes() -> None:
    nodes = [n for seed in range(12) for n in generate_case(seed).nodes]
    assert any(n.short_axis_mm >= 7.0 for n in nodes)
    assert any(n.short_axis_mm < 7.0 for n in nodes)
    assert {n.positive for n in nodes} == {True, False}
    assert {n.station for n in nodes} == set(STATIONS)
    assert set(np.unique(generate_case(0, with_nodes=False).labels)) == {0, 1, 2, 3}


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="'spacing_mm'"):
        generate_case(0, spacing_mm=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="could not place"):
        generate_case(0, n_nodes=60)
