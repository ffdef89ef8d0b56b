"""Pure parts of the two stages: gate + halo, tile selection, output scale, run chunking."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.dicom.slide import Level, Raster
from dicomnode.errors import ModelError
from dicomnode.pipelines.wsi_two_stage.stages import ClassifierResult, gate_cells, output_scale, select_tiles
from dicomnode.pipelines.wsi_two_stage.stream import PatchGrid, _chunks, _read_chunk, tile_bands


def result(prob: np.ndarray, classified: np.ndarray) -> ClassifierResult:
    raster = Raster(Level(0, 640, 640, 2.0), 1.0, 2.0, 640, 640)
    return ClassifierResult(PatchGrid(raster, 64, 64), prob, classified)


def test_gate_adds_a_one_patch_halo() -> None:
    prob = np.zeros((5, 6), np.float32)
    prob[2, 3] = 0.31
    prob[0, 0] = 0.29  # below the gate
    gated = gate_cells(result(prob, np.ones((5, 6), bool)), 0.3)
    expected = np.zeros((5, 6), bool)
    expected[1:4, 2:5] = True
    assert np.array_equal(gated, expected)


def test_gate_ignores_unclassified_cells_and_dense_takes_all_tissue() -> None:
    prob = np.full((3, 3), 0.9, np.float32)
    classified = np.zeros((3, 3), bool)
    classified[0, 0] = True
    assert gate_cells(result(prob, np.zeros((3, 3), bool)), 0.3).sum() == 0
    assert np.array_equal(gate_cells(result(prob, classified), 0.3, dense=True), classified)


def test_select_tiles_by_area_overlap() -> None:
    selected = np.zeros((8, 8), bool)
    selected[3, 5] = True  # cell covers [640, 768) x [384, 512) µm with 128 µm cells
    # 384 µm tiles: column 1 = [384, 768), row 1 = [384, 768)
    assert select_tiles(selected, 128.0, 384.0, (3, 3)) == [(1, 1)]
    # 200 µm tiles: x in [640, 768) hits columns 3 ([600, 800)); y in [384, 512) rows 1, 2
    assert select_tiles(selected, 128.0, 200.0, (6, 6)) == [(1, 3), (2, 3)]


def test_output_scale_must_give_whole_pixels() -> None:
    assert output_scale(128, 4.0, 4.0, 16) == 1
    assert output_scale(128, 2.0, 4.0, 16) == pytest.approx(0.5)
    with pytest.raises(ModelError, match="whole output pixels"):
        output_scale(128, 2.0, 4.0, 15)


def test_chunks_are_runs_of_neighbours_in_one_row() -> None:
    cells = [(0, 0), (0, 1), (0, 2), (0, 4), (1, 0), (0, 3), (1, 1)]
    assert _chunks(cells, 3) == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (0, 4)], [(1, 0), (1, 1)]]


def test_chunks_of_a_band_span_its_rows_in_row_major_order() -> None:
    cells = [(0, 1), (1, 0), (1, 1), (2, 5), (3, 2), (4, 0)]
    chunks = _chunks(cells, 2, lambda row: row // 4)
    assert chunks == [[(0, 1), (1, 0), (1, 1)], [(3, 2)], [(2, 5)], [(4, 0)]]


def test_tile_bands_follow_the_stored_tile_rows() -> None:
    level = Level(0, 1024, 1024, 2.0, tile_height=256)
    classifier = PatchGrid(Raster(level, 1.0, 2.0, 1024, 1024), 64, 64)
    band = tile_bands(classifier)
    assert band is not None and [band(r) for r in range(9)] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    segmenter = PatchGrid(Raster(level, 1.0, 2.0, 1024, 1024), 128, 96, 16)
    band = tile_bands(segmenter)
    assert band is not None and [band(r) for r in range(5)] == [-1, 0, 0, 1, 1]
    assert tile_bands(PatchGrid(Raster(Level(0, 64, 64, 2.0), 1.0, 2.0, 64, 64), 64, 64)) is None


class _CoordinateSlide:
    """Pixel (x, y) of the raster holds (x % 251, y % 251, (x + y) % 251)."""

    def read(self, raster: Raster, x: int, y: int, width: int, height: int) -> np.ndarray:
        ys, xs = np.mgrid[y : y + height, x : x + width]
        return np.stack([xs % 251, ys % 251, (xs + ys) % 251], axis=-1).astype(np.uint8)


def test_read_chunk_cuts_each_cell_of_a_band_from_one_region() -> None:
    slide = _CoordinateSlide()
    grid = PatchGrid(Raster(Level(0, 1024, 1024, 2.0, 256), 1.0, 2.0, 1024, 1024), 32, 24, 4)
    run = [(0, 1), (1, 0), (1, 1), (2, 3)]
    patches = _read_chunk(slide, grid, run)  # type: ignore[arg-type]
    for (r, c), patch in zip(run, patches, strict=True):
        x, y = grid.origin((r, c))
        assert np.array_equal(patch, slide.read(grid.raster, x, y, 32, 32))
