"""Synthetic WSI generator: determinism, DICOM validity, pyramid, ground truth vs pixels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from wsidicom import WsiDicom

from dicomnode.outputs.validate import dciodvfy_errors
from dicomnode.synth.wsi import SyntheticSlide, generate_slide, render_region

DEPOSITS = [(0.45, 0.50, 0.15), (1.0, 0.95, 0.6)]  # an ITC and a micrometastasis


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """A 1.5 × 1.5 mm slide at 0.5 µm/px (144 level-0 tiles)."""
    folder = tmp_path_factory.mktemp("wsi") / "slide"
    return generate_slide(folder, 11, size_mm=(1.5, 1.5), deposits=DEPOSITS)


def _level(folder: Path, mpp: float) -> np.ndarray:
    with WsiDicom.open(folder) as wsi:
        level = next(lv for lv in wsi.levels if abs(lv.mpp.width - mpp) < 1e-3)
        size = (level.size.width, level.size.height)
        return np.asarray(wsi.read_region((0, 0), level.level, size).convert("RGB"))


def _content(files: list[Path]) -> list[tuple[str, str, bytes]]:
    """(SOPInstanceUID, StudyInstanceUID, PixelData) per file."""
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        out.append((ds.SOPInstanceUID, ds.StudyInstanceUID, ds.PixelData))
    return out


def test_same_seed_same_slide_other_seed_differs(tmp_path: Path) -> None:
    args = {"size_mm": (0.8, 0.8), "deposits": [(0.4, 0.4, 0.3)]}
    a = generate_slide(tmp_path / "a", 5, **args)
    b = generate_slide(tmp_path / "b", 5, **args)
    c = generate_slide(tmp_path / "c", 6, **args)
    assert [f.name for f in a.files] == [f.name for f in b.files]
    assert _content(a.files) == _content(b.files)
    assert a.deposits == b.deposits and a.blobs == b.blobs
    ca, cc = _content(a.files), _content(c.files)
    assert {x[0] for x in ca}.isdisjoint({x[0] for x in cc})
    assert ca[0][2] != cc[0][2]


def test_pyramid_opens_with_wsidicom(slide: SyntheticSlide) -> None:
    assert slide.size_px == (3000, 3000)
    with WsiDicom.open(slide.folder) as wsi:
        mpps = [round(lv.mpp.width, 3) for lv in wsi.levels]
        assert mpps[:4] == [0.5, 1.0, 2.0, 4.0]
        base = wsi.levels[0]
        assert (base.size.width, base.size.height) == slide.size_px
        assert len(slide.files) == len(wsi.levels)
    ds = pydicom.dcmread(slide.files[0], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
    assert ds.DimensionOrganizationType == "TILED_FULL"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert str(ds.PatientName) == "SYNTHETIC^SLIDE"
    assert ds.StudyDate and ds.StudyTime
    assert ds.OpticalPathSequence[0].ICCProfile[12:16] == b"scnr"
    assert ds.SpecimenDescriptionSequence[0].PrimaryAnatomicStructureSequence[0].CodeValue == ("59441001")


def test_dciodvfy_has_no_errors(slide: SyntheticSlide) -> None:
    for path in slide.files:
        assert dciodvfy_errors(path) == [], path.name


@pytest.mark.parametrize("mpp", [0.5, 2.0, 4.0])
def test_mask_matches_deposit_areas(slide: SyntheticSlide, mpp: float) -> None:
    mask = slide.mask(mpp)
    assert mask.shape == (math.ceil(3000 * 0.5 / mpp),) * 2
    px_mm2 = (mpp / 1000.0) ** 2
    for dep in slide.deposits:
        (cx, cy), r = dep.center_mm, dep.radius_mm
        one = SyntheticSlide(slide.folder, [], slide.mpp, slide.size_px, [dep]).mask(mpp)
        tolerance = 2 * math.pi * r * (mpp / 1000.0)  # one pixel along the perimeter
        assert abs(one.sum() * px_mm2 - dep.area_mm2) <= tolerance
        assert one[int(cy * 1000 / mpp), int(cx * 1000 / mpp)]
    assert mask.sum() * px_mm2 == pytest.approx(sum(d.area_mm2 for d in slide.deposits), rel=0.05)
    assert [d.category for d in slide.deposits] == ["itc", "micro"]
    assert slide.deposits[1].largest_dimension_mm == pytest.approx(0.6)


def test_pixels_show_tumour_where_the_mask_says(slide: SyntheticSlide) -> None:
    image = _level(slide.folder, 2.0).astype(np.float64)
    mask = slide.mask(2.0)
    tissue = slide.tissue_mask(2.0) & ~mask
    rows, cols = min(image.shape[0], mask.shape[0]), min(image.shape[1], mask.shape[1])
    image, mask, tissue = image[:rows, :cols], mask[:rows, :cols], tissue[:rows, :cols]
    tumour_mean, stroma_mean = image[mask].mean(0), image[tissue].mean(0)
    glass_mean = image[~slide.tissue_mask(2.0)[:rows, :cols]].mean(0)
    assert tumour_mean.sum() - stroma_mean.sum() > 60  # paler, larger-celled deposits
    assert glass_mean.min() > 230  # white background
    assert stroma_mean[0] > stroma_mean[1] and stroma_mean[2] > stroma_mean[1]  # pink/purple


def test_random_set_has_itc_and_micro_and_negative_option(tmp_path: Path) -> None:
    rnd = generate_slide(tmp_path / "r", 3, mpp=4.0)  # coarse level 0 keeps this fast
    cats = [d.category for d in rnd.deposits]
    assert "itc" in cats and "micro" in cats
    tissue = rnd.tissue_mask(8.0)
    mask = rnd.mask(8.0)
    assert mask.any() and not (mask & ~tissue).any()
    neg = generate_slide(tmp_path / "n", 3, mpp=4.0, deposits=[])
    assert neg.deposits == [] and not neg.mask(8.0).any() and neg.tissue_mask(8.0).mean() > 0.3
    assert neg.blobs == rnd.blobs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile_size": 100}, "tile_size"),
        ({"deposits": [(9.0, 1.0, 0.2)]}, "deposits"),
        ({"mpp": 0.0}, "mpp"),
    ],
)
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_slide(tmp_path / "x", 1, size_mm=(1.0, 1.0), **kwargs)


def test_non_empty_folder_is_refused(slide: SyntheticSlide) -> None:
    with pytest.raises(ValueError, match="'folder' .* is not empty"):
        generate_slide(slide.folder, 12, size_mm=(1.0, 1.0))


def test_tiles_are_seamless_pure_functions_of_position(slide: SyntheticSlide) -> None:
    """Rendering a region whole or in pieces gives the same pixels (tile-by-tile writing)."""
    x, y, w, h = 1100, 900, 300, 200  # crosses the ITC's and the micro's neighbourhood
    whole = render_region(slide, x, y, w, h)
    left = render_region(slide, x, y, 117, h)
    right = render_region(slide, x + 117, y, w - 117, h)
    assert np.array_equal(whole, np.concatenate([left, right], axis=1))
    top, bottom = render_region(slide, x, y, w, 61), render_region(slide, x, y + 61, w, h - 61)
    assert np.array_equal(whole, np.concatenate([top, bottom], axis=0))
    assert not np.array_equal(whole, render_region(slide, x + 1, y, w, h))
