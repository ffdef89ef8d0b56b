"""Tissue detection of the wsi-two-stage pipeline: on the real test slides (shared test data
via the ``wsi_dir`` fixture, read in place) and the pure helpers (Otsu, saturation, hole
filling) that need no data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from dicomnode.dicom.slide import open_slide
from dicomnode.pipelines.wsi_two_stage.tissue import detect_tissue, fill_holes, otsu_threshold, saturation

#: Slides of the shared test data, relative to the ``wsi_dir`` fixture.
DICOMIZER = "cmu1-small-region-pyramid-wsidicomizer"
WSI2DCM = "cmu1-small-region-pyramid-wsi2dcm"


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.endswith(".txt")) if path.is_dir() else [path]


def test_tissue_of_the_two_cmu_conversions_agrees(wsi_dir: Path) -> None:
    areas = []
    for path in (wsi_dir / DICOMIZER, wsi_dir / WSI2DCM):
        with open_slide(files(path)) as slide:
            raster = slide.raster(8.0)
            areas.append(detect_tissue(slide.read_raster(raster), raster.mpp).area_mm2)
    assert areas[0] == pytest.approx(areas[1], rel=0.03)
    assert 0.4 < areas[0] < 0.9  # the skin strip covers roughly half of 1.1 x 1.5 mm


def test_otsu_and_saturation() -> None:
    values = np.concatenate([np.full(100, 0.1), np.full(300, 0.6)])
    assert 0.1 < otsu_threshold(values) <= 0.6
    rgb = np.array([[[255, 255, 255], [200, 100, 100]]], np.uint8)
    assert saturation(rgb).tolist() == [[0.0, pytest.approx(0.5)]]
    black = np.zeros((1, 1, 3), np.uint8)
    assert saturation(black).tolist() == [[0.0]]


def test_fill_holes_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = ndimage.binary_dilation(rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) > 0.6)
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    ring = np.zeros((5, 5), bool)
    ring[1:4, 1:4], ring[2, 2] = True, False
    assert fill_holes(ring)[2, 2] and not fill_holes(ring)[0, 0]


def test_tissue_on_the_camelyon_lymph_node_sections(wsi_dir: Path) -> None:
    from scipy import ndimage

    with open_slide(files(wsi_dir / "ezwsi-camelyon")) as slide:
        raster = slide.raster(8.0, max_upsample=float("inf"))  # the slide is 29 µm/px
        tissue = detect_tissue(slide.read_raster(raster), raster.mpp)
    labels, count = ndimage.label(tissue.mask)
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1] * (raster.mpp / 1000) ** 2
    # two H&E sections, each cut as a large and a smaller piece: four pieces > 10 mm²
    assert (sizes > 10).sum() == 4
    assert 0.15 < tissue.mask.mean() < 0.3
