"""The two model stages: a patch classifier gates a segmenter.

Stage 1 runs the classifier on every tissue patch of a regular grid at the classifier's
µm/px and patch size and gives a probability grid. Stage 2 runs the segmenter only on the
tiles that overlap a gated patch (probability ≥ gate) or its one-patch halo — or on every
tissue patch when ``dense`` — and stitches a probability mask at the segmenter's output
resolution. Segmenter tiles overlap by ``2 * margin`` input pixels and only their centres
are kept, so the mask has no seams from tile borders; the centres tile the slide exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from scipy import ndimage

from dicomnode.dicom.slide import Slide
from dicomnode.errors import ModelError
from dicomnode.pipelines.wsi_two_stage.stream import Cell, PatchGrid, PatchModel, StreamStats, predict_cells
from dicomnode.pipelines.wsi_two_stage.tissue import TissueMap, cell_fraction

__all__ = [
    "ClassifierResult",
    "SegmenterResult",
    "gate_cells",
    "output_scale",
    "run_classifier",
    "run_segmenter",
    "select_tiles",
]

logger = logging.getLogger(__name__)


@dataclass
class ClassifierResult:
    """Stage-1 output.

    Attributes
    ----------
    grid
        The classifier patch grid (stride = patch).
    prob
        float32 ``grid.shape`` probabilities; 0 where not classified.
    classified
        Boolean ``grid.shape``: the tissue patches that were run.
    stats
        Streaming counters.
    """

    grid: PatchGrid
    prob: np.ndarray
    classified: np.ndarray
    stats: StreamStats = field(default_factory=StreamStats)


@dataclass
class SegmenterResult:
    """Stage-2 output.

    Attributes
    ----------
    prob
        float16 probability mask at ``mpp``; pixel (0, 0) starts at the slide origin.
    mpp
        Effective µm/px of ``prob``.
    tiles
        Number of segmenter input patches run (the "segmenter calls").
    stats
        Streaming counters.
    """

    prob: np.ndarray
    mpp: float
    tiles: int
    stats: StreamStats = field(default_factory=StreamStats)


def run_classifier(
    slide: Slide,
    model: PatchModel,
    mpp: float,
    patch: int,
    tissue: TissueMap,
    *,
    min_tissue: float = 0.05,
    batch_size: int = 32,
    workers: int = 2,
) -> ClassifierResult:
    """Stage 1: classify every grid patch with at least ``min_tissue`` tissue."""
    grid = PatchGrid(slide.raster(mpp), patch, patch)
    classified = cell_fraction(tissue, grid.cell_um, grid.shape) >= min_tissue
    prob = np.zeros(grid.shape, np.float32)

    def sink(cells: Sequence[Cell], out: np.ndarray) -> None:
        values = np.asarray(out, np.float32).reshape(len(cells), -1)[:, 0]
        rows, cols = zip(*cells, strict=True)
        prob[list(rows), list(cols)] = values

    cells: list[Cell] = [(int(r), int(c)) for r, c in np.argwhere(classified)]
    stats = predict_cells(slide, grid, cells, model, sink, batch_size=batch_size, workers=workers)
    logger.info(
        "classifier: %d patches at %.3f µm/px, max p %.3f",
        stats.patches,
        grid.raster.mpp,
        float(prob.max(initial=0.0)),
    )
    return ClassifierResult(grid, prob, classified, stats)


def gate_cells(result: ClassifierResult, gate: float, *, dense: bool = False) -> np.ndarray:
    """Classifier cells the segmenter must cover.

    Gated cells (probability ≥ ``gate``) plus a one-patch halo (8-neighbourhood); with
    ``dense`` every classified (tissue) cell instead.
    """
    if dense:
        return result.classified.copy()
    gated = result.classified & (result.prob >= gate)
    return np.asarray(ndimage.binary_dilation(gated, np.ones((3, 3), bool)))


def select_tiles(selected: np.ndarray, cell_um: float, tile_um: float, shape: tuple[int, int]) -> list[Cell]:
    """Tiles of a ``tile_um`` grid whose area overlaps a selected ``cell_um`` cell."""
    csum = np.pad(selected.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def bounds(n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(n)
        lo = np.clip(np.floor(idx * tile_um / cell_um + 1e-9).astype(int), 0, limit)
        hi = np.clip(np.ceil((idx + 1) * tile_um / cell_um - 1e-9).astype(int), 0, limit)
        return lo, hi

    r0, r1 = bounds(shape[0], selected.shape[0])
    c0, c1 = bounds(shape[1], selected.shape[1])
    total = csum[r1][:, c1] - csum[r0][:, c1] - csum[r1][:, c0] + csum[r0][:, c0]
    return [(int(r), int(c)) for r, c in np.argwhere(total > 0)]


def output_scale(patch: int, mpp: float, output_mpp: float, margin: int) -> Fraction:
    """Output pixels per segmenter input pixel, checked to give whole output pixels.

    Raises
    ------
    ModelError
        The patch or margin does not map to a whole number of output pixels.
    """
    scale = Fraction(mpp).limit_denominator(1000) / Fraction(output_mpp).limit_denominator(1000)
    if (patch * scale).denominator != 1 or (margin * scale).denominator != 1:
        raise ModelError(
            f"segmenter: patch_size {patch} and margin {margin} at {mpp} µm/px must map to "
            f"whole output pixels at output_mpp {output_mpp}"
        )
    return scale


def run_segmenter(
    slide: Slide,
    model: PatchModel,
    spec: tuple[float, int, float],
    selected: np.ndarray,
    cell_um: float,
    *,
    margin: int,
    batch_size: int = 8,
    workers: int = 2,
) -> SegmenterResult:
    """Stage 2: segment the tiles over ``selected`` classifier cells and stitch centres.

    ``spec`` is (mpp, patch_size, output_mpp) of the segmenter.
    """
    mpp, patch, output_mpp = spec
    scale = output_scale(patch, mpp, output_mpp, margin)
    grid = PatchGrid(slide.raster(mpp), patch, patch - 2 * margin, margin)
    out_px, keep0 = int(patch * scale), int(margin * scale)
    step = grid.stride * scale
    rows = math.ceil(grid.raster.height * scale)
    cols = math.ceil(grid.raster.width * scale)
    # float16 (resolution 0.0005 near 1) halves the largest array of a big slide
    prob = np.zeros((rows, cols), np.float16)
    tiles = select_tiles(selected, cell_um, grid.cell_um, grid.shape)

    def sink(cells: Sequence[Cell], out: np.ndarray) -> None:
        out = np.asarray(out, np.float32).reshape(len(cells), -1, out.shape[-1])
        if out.shape[1:] != (out_px, out_px):
            raise ModelError(f"segmenter output {out.shape[1:]} != expected {(out_px, out_px)}")
        for (r, c), tile in zip(cells, out, strict=True):
            y, x = int(r * step), int(c * step)
            centre = tile[keep0 : out_px - keep0, keep0 : out_px - keep0]
            h, w = min(centre.shape[0], rows - y), min(centre.shape[1], cols - x)
            prob[y : y + h, x : x + w] = centre[:h, :w]

    stats = predict_cells(slide, grid, tiles, model, sink, batch_size=batch_size, workers=workers)
    logger.info("segmenter: %d tiles at %.3f µm/px", stats.patches, grid.raster.mpp)
    return SegmenterResult(prob, grid.raster.mpp / float(scale), stats.patches, stats)
