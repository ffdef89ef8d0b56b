"""Tiled WSI SEG on real slide headers (shared test data via the ``wsi_dir`` fixture): dciodvfy,
highdicom read-back, slide geometry; band masks and the output grid need no data."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicomnode.dicom.uids import derive_uid
from dicomnode.inference.manifest import ModelBundle
from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.pipelines.wsi_two_stage.seg import (
    SegGeometry,
    band_masks,
    build_wsi_seg,
    slide_reference,
    to_output_grid,
)

#: Slide headers of the shared test data, relative to the ``wsi_dir`` fixture.
CMU_DICOMIZER = "cmu1-small-region-pyramid-wsidicomizer"
CMU_WSI2DCM = "cmu1-small-region-pyramid-wsi2dcm/level-0-frames-0-30.dcm"
MARROW_RAW = "gcp-wsi2dcm-bone-marrow/raw.dicom"
BANDS = (0.5, 0.7, 0.9)


def bundle() -> ModelBundle:
    return ModelBundle(
        root=Path("."),
        id="wsi-seg-test",
        version="0.0.1",
        task="wsi-two-stage",
        backend="onnx",
        files={},
        intended_use="tests",
        labels={"tumour": {"code": "14799000", "scheme": "SCT", "meaning": "Neoplasm, Secondary"}},
    )


def level0(path: Path) -> pydicom.Dataset:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    heads = [h for h in heads if "VOLUME" in list(h.get("ImageType", []))]
    return max(heads, key=lambda h: int(h.TotalPixelMatrixColumns) * int(h.TotalPixelMatrixRows))


def spacing_um(ds: pydicom.Dataset) -> float:
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    return float(pm.PixelSpacing[1]) * 1000.0


def uid(kind: str) -> str:
    return derive_uid("test-series", "wsi-two-stage", kind)


def make_inputs(base: pydicom.Dataset, mpp: float, cell_px: int) -> tuple[np.ndarray, ...]:
    mpp0 = spacing_um(base)
    shape = (
        int(np.ceil(base.TotalPixelMatrixRows * mpp0 / mpp)),
        int(np.ceil(base.TotalPixelMatrixColumns * mpp0 / mpp)),
    )
    tumour = np.zeros(shape, bool)
    tumour[shape[0] // 3 : shape[0] // 2, shape[1] // 5 : shape[1] // 2] = True
    tumour[2, 3] = True  # asymmetric marker near the origin
    grid = (-(-shape[0] // cell_px), -(-shape[1] // cell_px))
    prob = np.random.default_rng(7).random(grid).astype(np.float32)
    bands = to_output_grid(band_masks(prob, np.ones(grid, bool), BANDS), cell_px * mpp, mpp, shape)
    return tumour, bands


@pytest.mark.parametrize(
    ("source", "mpp"),
    [(CMU_DICOMIZER, 4.0), (CMU_WSI2DCM, 8.0), (MARROW_RAW, 33.566)],
    ids=["dicomizer", "wsi2dcm", "marrow-raw"],
)
def test_seg_roundtrip_and_dciodvfy(wsi_dir: Path, tmp_path: Path, source: str, mpp: float) -> None:
    base = level0(wsi_dir / source)
    tumour, bands = make_inputs(base, mpp, cell_px=8)
    seg = build_wsi_seg(SegGeometry(base, spacing_um(base), mpp), tumour, bands, bundle(), uid, band_limits=BANDS)
    out = tmp_path / "seg.dcm"
    seg.save_as(out)
    back = hd.seg.segread(out)
    assert back.SegmentationType == "BINARY" and back.DimensionOrganizationType == "TILED_SPARSE"
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian  # what slide viewers decode
    assert [s.SegmentLabel for s in back.SegmentSequence][0] == "Neoplasm, Secondary"
    tpm = back.get_total_pixel_matrix(combine_segments=False)
    assert np.array_equal(tpm[..., 0] > 0, tumour)
    assert np.array_equal(np.moveaxis(tpm[..., 1:], -1, 0) > 0, bands)
    assert back.StudyInstanceUID == base.StudyInstanceUID
    assert back.SeriesInstanceUID == uid("seg.series")
    assert "NOT FOR CLINICAL USE" in back.SeriesDescription
    assert dciodvfy_errors(out) == []


def test_seg_pixel_maps_to_the_source_pixel_it_covers(wsi_dir: Path, tmp_path: Path) -> None:
    base = level0(wsi_dir / CMU_DICOMIZER)
    mpp0, mpp = spacing_um(base), 4.0
    tumour, bands = make_inputs(base, mpp, cell_px=8)
    seg = build_wsi_seg(SegGeometry(base, mpp0, mpp), tumour, bands, bundle(), uid, band_limits=BANDS)
    seg.save_as(tmp_path / "seg.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    to_slide_seg = hd.spatial.ImageToReferenceTransformer.for_image(back, for_total_pixel_matrix=True)
    to_slide_src = hd.spatial.ImageToReferenceTransformer.for_image(
        slide_reference(base, uid("specimen")), for_total_pixel_matrix=True
    )
    seg_xy = np.array([[0.0, 0.0], [3.5, 2.5], [100.0, 250.0], [276.0, 370.0]])
    factor = mpp / mpp0
    assert np.allclose(to_slide_seg(seg_xy), to_slide_src(seg_xy * factor), atol=1e-6)


def test_band_masks_split_at_the_limits() -> None:
    prob = np.array([[0.95, 0.9, 0.8, 0.7], [0.6, 0.5, 0.49, 0.99]], np.float32)
    classified = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    red, green, blue = band_masks(prob, classified, BANDS)
    assert red.tolist() == [[True, False, False, False], [False, False, False, False]]
    assert green.tolist() == [[False, True, True, False], [False, False, False, False]]
    assert blue.tolist() == [[False, False, False, True], [True, True, False, False]]


def test_to_output_grid_is_integer_repeat_when_divisible() -> None:
    cells = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = to_output_grid(cells, 32.0, 4.0, (15, 20))  # 8 output px per cell, ragged edge
    assert np.array_equal(out[:15, :20], np.repeat(np.repeat(cells, 8, 0), 8, 1)[:15, :20])


@pytest.mark.parametrize(("cell_um", "mpp"), [(128.0, 4.0), (128.0, 9.77), (7.3, 2.93), (100.0, 300.0)])
def test_to_output_grid_is_nearest_lookup_by_pixel_centre(cell_um: float, mpp: float) -> None:
    rng = np.random.default_rng(7)
    cells = rng.random((3, 9, 13)) > 0.5
    shape = (70, 41)
    out = to_output_grid(cells, cell_um, mpp, shape)
    for r in range(shape[0]):
        for c in range(shape[1]):
            i, j = int((r + 0.5) * mpp // cell_um), int((c + 0.5) * mpp // cell_um)
            inside = i < cells.shape[1] and j < cells.shape[2]
            assert out[:, r, c].tolist() == (cells[:, i, j].tolist() if inside else [False] * 3)
