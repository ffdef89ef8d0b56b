"""Series → volume on real MR series (shared test data via the ``mr_dir`` fixture), checked
against SimpleITK's ImageSeriesReader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicomnode.dicom.volume import Volume, load_volume
from dicomnode.errors import PipelineError, VolumeError

#: Series of the shared test data, relative to the ``mr_dir`` fixture.
VERIO = "prostate-t2-axial-siemens-verio"
NEEDLE = "prostate-t2-axial-needle-guidance-siemens"
ADC_OBLIQUE = "prostate-adc-oblique-ge-qin"
ENHANCED = "enhanced"
TWO_ORIENTATIONS = "oblique-and-odd/philips-two-orientations-one-series"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_same_geometry(vol: Volume, ref: sitk.Image) -> None:
    assert vol.shape == tuple(reversed(ref.GetSize()))
    np.testing.assert_allclose(vol.origin_lps, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing_zyx[::-1], ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.direction.ravel(), ref.GetDirection(), atol=1e-4)
    far = (ref.GetSize()[0] - 1, ref.GetSize()[1] - 1, ref.GetSize()[2] - 1)
    np.testing.assert_allclose(vol.index_to_lps(far), ref.TransformIndexToPhysicalPoint(far), atol=1e-2)


@pytest.mark.parametrize("name", [VERIO, NEEDLE, ADC_OBLIQUE])
def test_single_frame_series_matches_simpleitk(mr_dir: Path, name: str) -> None:
    folder = mr_dir / name
    files = _files(folder)[::-1]  # file order must not matter
    vol = load_volume(files)
    ref = _sitk_series(folder)
    _assert_same_geometry(vol, ref)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref).astype(np.float32))
    assert vol.array.dtype == np.float32
    assert len({s.sop_instance_uid for s in vol.sources}) == vol.shape[0]
    assert all(s.frame_number is None for s in vol.sources)


def test_verio_shape_and_axes(mr_dir: Path) -> None:
    vol = load_volume(_files(mr_dir / VERIO))
    assert vol.shape == (40, 320, 320)
    assert vol.spacing_zyx == pytest.approx((3.0, 0.5, 0.5), abs=1e-4)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-6)
    positions = [
        float(pydicom.dcmread(s.path, stop_before_pixels=True).ImagePositionPatient[2])
        for s in vol.sources
        if s.path is not None
    ]
    assert positions == sorted(positions)


def test_non_square_needle_series_keeps_row_column_order(mr_dir: Path) -> None:
    vol = load_volume(_files(mr_dir / NEEDLE))
    assert vol.shape == (20, 256, 320)  # Rows 256, Columns 320
    assert vol.spacing_zyx[0] == pytest.approx(3.6, abs=1e-4)  # 3 mm slices, 0.6 mm gap


def test_oblique_to_sitk_roundtrip(mr_dir: Path) -> None:
    vol = load_volume(_files(mr_dir / ADC_OBLIQUE))
    image = vol.to_sitk()
    _assert_same_geometry(vol, image)
    lps = vol.index_to_lps([[3.0, 7.0, 2.0], [100.5, 20.0, 19.0]])
    np.testing.assert_allclose(vol.lps_to_index(lps), [[3.0, 7.0, 2.0], [100.5, 20.0, 19.0]])
    np.testing.assert_allclose(vol.zyx_to_lps([2.0, 7.0, 3.0]), lps[0])


@pytest.mark.parametrize(
    "name",
    [
        "philips_enhanced_T1_8frames.dcm",
        "siemens_enhanced_oblique_8frames.dcm",
        "siemens_xa10_sms_6frames.dcm",
    ],
)
def test_enhanced_mr_matches_simpleitk(mr_dir: Path, name: str) -> None:
    path = mr_dir / ENHANCED / name
    vol = load_volume([path])
    ref = sitk.ReadImage(str(path))
    _assert_same_geometry(vol, ref)
    assert [s.frame_number for s in vol.sources] == list(range(1, vol.shape[0] + 1))
    ds = pydicom.dcmread(path)
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    pvt = frame.PixelValueTransformationSequence[0]
    expected = ds.pixel_array[0] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    np.testing.assert_allclose(vol.array[0], expected, rtol=1e-6)


def test_enhanced_with_two_stacks_is_refused(mr_dir: Path) -> None:
    with pytest.raises(VolumeError, match=r"occur more than once.*frame1, .*frame33"):
        load_volume([mr_dir / ENHANCED / "philips_fieldmap_64frames.dcm"])


def test_two_orientations_in_one_series(mr_dir: Path) -> None:
    with pytest.raises(VolumeError, match=r"more than one orientation.*IM-0001-000\d-0001\.dcm"):
        load_volume(_files(mr_dir / TWO_ORIENTATIONS))


def test_missing_slice_names_its_neighbours(mr_dir: Path) -> None:
    vol = load_volume(_files(mr_dir / VERIO))
    names = [s.path for s in vol.sources if s.path is not None]
    dropped = names[:17] + names[18:]
    with pytest.raises(VolumeError, match=r"1 slice\(s\) missing") as info:
        load_volume(dropped)
    assert info.value.instances == (names[16].name, names[18].name)
    assert isinstance(info.value, PipelineError)


def test_non_uniform_spacing(mr_dir: Path, tmp_path: Path) -> None:
    files = _files(mr_dir / ADC_OBLIQUE)
    normal = load_volume(files).direction[:, 2]
    ds = pydicom.dcmread(files[5])
    moved = np.asarray(ds.ImagePositionPatient, float) + 1.2 * normal  # 1.2 mm along the normal
    ds.ImagePositionPatient = [round(float(v), 4) for v in moved]
    ds.save_as(tmp_path / "moved.dcm")
    with pytest.raises(VolumeError, match=r"non-uniform slice spacing.*moved\.dcm"):
        load_volume([*files[:5], tmp_path / "moved.dcm", *files[6:]])


def test_localizer_mixed_in(mr_dir: Path, tmp_path: Path) -> None:
    files = _files(mr_dir / VERIO)
    ds = pydicom.dcmread(files[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(tmp_path / "scout.dcm")
    with pytest.raises(VolumeError, match=r"1 localizer image.*scout\.dcm"):
        load_volume([*files, tmp_path / "scout.dcm"])


def test_inconsistent_pixel_spacing(mr_dir: Path, tmp_path: Path) -> None:
    files = _files(mr_dir / VERIO)
    ds = pydicom.dcmread(files[3])
    ds.PixelSpacing = [0.55, 0.5]
    ds.save_as(tmp_path / "resampled.dcm")
    with pytest.raises(VolumeError, match=r"inconsistent in-plane grid.*resampled\.dcm"):
        load_volume([*files[:3], tmp_path / "resampled.dcm", *files[4:]])


def test_other_series_mixed_in(mr_dir: Path) -> None:
    with pytest.raises(VolumeError, match=r"2 different series"):
        load_volume([*_files(mr_dir / VERIO)[:3], *_files(mr_dir / NEEDLE)[:1]])


def test_datasets_accepted_and_rescale_applied(mr_dir: Path) -> None:
    first4 = [s.path for s in load_volume(_files(mr_dir / VERIO)).sources[:4]]
    datasets = [pydicom.dcmread(p) for p in first4]
    for ds in datasets:
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    vol = load_volume(datasets)
    raw = load_volume(first4)  # type: ignore[arg-type]
    assert [s.path for s in vol.sources] == first4
    np.testing.assert_allclose(vol.array, raw.array * 2 - 10)


def test_not_dicom(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(VolumeError, match=r"not a readable DICOM file.*notes\.txt"):
        load_volume([bad])


def test_enhanced_localizer_frame_named(mr_dir: Path) -> None:
    ds = pydicom.dcmread(mr_dir / ENHANCED / "siemens_enhanced_oblique_8frames.dcm")
    frame_type = ds.PerFrameFunctionalGroupsSequence[2].MRImageFrameTypeSequence[0]
    frame_type.FrameType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
    with pytest.raises(VolumeError, match=r"1 localizer.*siemens_enhanced_oblique_8frames\.dcm#frame3"):
        load_volume([ds])


def test_malformed_geometry_is_a_volume_error(mr_dir: Path, tmp_path: Path) -> None:
    files = _files(mr_dir / NEEDLE)
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1]  # five values
    ds.save_as(tmp_path / "short-iop.dcm")
    with pytest.raises(VolumeError, match=r"malformed geometry attribute.*short-iop\.dcm"):
        load_volume([*files[:2], tmp_path / "short-iop.dcm"])
    del ds.ImagePositionPatient
    with pytest.raises(VolumeError, match=r"ImagePositionPatient is missing.*\.dcm"):
        load_volume([ds])


def test_non_image_instance_in_series_is_named(mr_dir: Path) -> None:
    study = mr_dir / "abdomen-philips-ingenia-liver-mrcp"
    files = [*_files(study / "s401_T2W_TRA_BH"), study / "philips-private-sop" / "XX_0027"]
    with pytest.raises(VolumeError, match=r"without pixel data are not images.*XX_0027"):
        load_volume(files)
