"""Opening and reading the real test slides (dicomnode.dicom.slide; shared test data via
the ``wsi_dir`` fixture, read in place), and the JPEG colour-space marker check that needs
no data. Tissue detection on the same slides: tests/pipelines/wsi_two_stage/test_wsi_tissue.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomnode.dicom.slide import _signals_ycbcr, open_slide
from dicomnode.errors import PipelineError

#: Slides of the shared test data, relative to the ``wsi_dir`` fixture.
DICOMIZER = "cmu1-small-region-pyramid-wsidicomizer"
WSI2DCM = "cmu1-small-region-pyramid-wsi2dcm"
MARROW = "gcp-wsi2dcm-bone-marrow"


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.endswith(".txt")) if path.is_dir() else [path]


def test_levels_of_the_wsi2dcm_pyramid_exclude_single_frame_levels(wsi_dir: Path) -> None:
    with open_slide(files(wsi_dir / WSI2DCM)) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [
            (2220, 2967),
            (1110, 1483),
            (555, 741),
        ]
        assert slide.base.TotalPixelMatrixColumns == 2220


def test_level_with_baked_in_wrong_colours_is_dropped(wsi_dir: Path) -> None:
    # wsidicomizer built its 139x186 level from YCbCr samples taken as RGB
    with open_slide(files(wsi_dir / DICOMIZER)) as slide:
        assert [round(lv.mpp, 3) for lv in slide.levels] == [0.499, 0.998, 1.996, 3.992]


def test_two_conversions_of_one_slide_read_the_same_colours(wsi_dir: Path) -> None:
    regions = []
    for path in (wsi_dir / DICOMIZER, wsi_dir / WSI2DCM):
        with open_slide(files(path)) as slide:
            for mpp in (0.5, 2.0, 8.0):
                raster = slide.raster(mpp)
                regions.append(slide.read(raster, 0, 0, raster.width, raster.height // 2).astype(float))
    for a, b in zip(regions[:3], regions[3:], strict=True):
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        assert np.abs(a[:h, :w] - b[:h, :w]).mean() < 6.0
    assert 230 < regions[0][:20, :20].mean() < 250  # glass is white, not YCbCr grey-green


def test_resampled_raster_matches_exact_level_downscale(wsi_dir: Path) -> None:
    with open_slide(files(wsi_dir / WSI2DCM)) as slide:
        raster = slide.raster(4.0)  # no level: level 2 (1.996) downscaled by 2.004
        assert raster.level.mpp == pytest.approx(1.996) and raster.scale == pytest.approx(2.004, abs=1e-3)
        assert (raster.width, raster.height) == (277, 371)  # the base extent, not level 2
        img = slide.read(raster, 100, 100, 64, 64).astype(float)
        native = slide.read(slide.raster(1.996), 200, 200, 128, 128).astype(float)
        halved = native.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))

        # scale 2.004 is not 2: compare 8x8-pixel block means (insensitive to the drift)
        def blocks(a: np.ndarray) -> np.ndarray:
            return a.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))

        assert np.abs(blocks(img) - blocks(halved)).mean() < 4.0
        assert np.abs(blocks(img) - blocks(np.roll(halved, 8, axis=1))).mean() > 8.0


def test_reads_outside_the_matrix_are_white(wsi_dir: Path) -> None:
    with open_slide(files(wsi_dir / WSI2DCM)) as slide:
        raster = slide.raster(2.0)
        edge = slide.read(raster, raster.width - 10, raster.height - 10, 40, 40)
        assert edge.shape == (40, 40, 3) and (edge[20:, 20:] == 255).all()


def test_bone_marrow_codecs_decode_to_the_same_pixels(wsi_dir: Path) -> None:
    arrays = {}
    for name in ("raw.dicom", "jpeg2000.dicom", "jpeg.dicom"):
        with open_slide([wsi_dir / MARROW / name]) as slide:
            raster = slide.raster(slide.mpp)
            arrays[name] = slide.read_raster(raster).astype(int)
    assert np.array_equal(arrays["raw.dicom"], arrays["jpeg2000.dicom"])
    assert np.abs(arrays["raw.dicom"] - arrays["jpeg.dicom"]).mean() < 4.0


def test_folder_with_three_series_is_refused(wsi_dir: Path) -> None:
    with pytest.raises(PipelineError, match="3 slide series"), open_slide(files(wsi_dir / MARROW)):
        pass


def test_label_from_another_series_is_ignored(wsi_dir: Path) -> None:
    with open_slide(files(wsi_dir / "ezwsi-camelyon")) as slide:
        assert [(lv.width, lv.height) for lv in slide.levels] == [(1152, 700)]


def test_fluorescence_is_unsupported(wsi_dir: Path) -> None:
    with (
        pytest.raises(
            PipelineError,
            match=r"unsupported: not a brightfield RGB slide .*MONOCHROME2"
            r".*3 optical path",
        ),
        open_slide(files(wsi_dir / "wg26-3dhistech-bpaec-fluorescence")),
    ):
        pass


def test_column_major_tcga_file_is_a_clear_error(wsi_dir: Path) -> None:
    with (
        pytest.raises(PipelineError, match=r"cannot open slide with wsidicom.*column-major"),
        open_slide(files(wsi_dir / "pathml-tcga-prostate")),
    ):
        pass


def test_too_coarse_for_the_model(wsi_dir: Path) -> None:
    with (
        open_slide(files(wsi_dir / "ezwsi-camelyon")) as slide,
        pytest.raises(PipelineError, match=r"too coarse.*28\.969 µm/px.*needs 2 µm/px"),
    ):
        slide.raster(2.0)


def test_jpeg_colour_space_markers() -> None:
    sof = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03"
    assert _signals_ycbcr(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + sof + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01")
    assert not _signals_ycbcr(b"\xff\xd8" + sof + b"R\x11\x00G\x11\x00B\x11\x00")
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00"
    assert not _signals_ycbcr(b"\xff\xd8" + adobe + b"\x00" + sof + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    assert _signals_ycbcr(b"\xff\xd8" + adobe + b"\x01" + sof + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")


def test_corrupt_frame_is_a_pipeline_error(wsi_dir: Path, tmp_path: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(wsi_dir / MARROW / "jpeg.dicom")
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    frames[5] = frames[5][:40]  # truncated JPEG
    ds.PixelData = encapsulate(frames)
    ds.save_as(tmp_path / "broken.dcm")
    with open_slide([tmp_path / "broken.dcm"]) as slide:
        raster = slide.raster(slide.mpp)
        with pytest.raises(PipelineError, match="cannot read/decode slide level 0 region"):
            slide.read_raster(raster)
