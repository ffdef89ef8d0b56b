"""Stream patches from a slide to a model: threaded reads pipelined with batched inference.

Neighbouring patches whose rows start in the same row of stored tiles are read as one
region (a "chunk", at most ``max_run`` columns wide) by a small thread pool, so each tile
is fetched once per band rather than once per patch row that crosses it; decoding the
next chunks overlaps with inference on the current batch in the calling thread. Only a
bounded number of chunks is in flight, so memory stays at a few patch rows whatever the
slide size.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dicomnode.dicom.slide import Raster, Slide

__all__ = ["Cell", "PatchGrid", "PatchModel", "StreamStats", "predict_cells", "tile_bands"]

logger = logging.getLogger(__name__)

Cell = tuple[int, int]


class PatchModel(Protocol):
    """What the stages need from a model (``dicomnode.inference.onnx.OnnxModel``)."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Predict a ``(N, H, W, 3)`` uint8 RGB batch."""
        ...


@dataclass(frozen=True)
class PatchGrid:
    """A regular grid of square patches on a raster.

    Cell ``(row, col)`` is the patch whose top-left raster pixel is
    ``(col * stride - margin, row * stride - margin)``; with ``margin=0`` and
    ``stride=patch`` the patches tile the raster exactly.
    """

    raster: Raster
    patch: int
    stride: int
    margin: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid: enough strides to cover the raster."""
        return (-(-self.raster.height // self.stride), -(-self.raster.width // self.stride))

    @property
    def cell_um(self) -> float:
        """Side of one stride in µm."""
        return self.stride * self.raster.mpp

    def origin(self, cell: Cell) -> tuple[int, int]:
        """Raster (x, y) of the patch's top-left pixel."""
        return cell[1] * self.stride - self.margin, cell[0] * self.stride - self.margin


@dataclass
class StreamStats:
    """Counters for one streaming run."""

    patches: int = 0
    batches: int = 0
    read_s: float = 0.0
    infer_s: float = 0.0


def _chunks(
    cells: Iterable[Cell],
    max_cells: int,
    band: Callable[[int], int] | None = None,
) -> list[list[Cell]]:
    """Group cells into chunks, each read as one region.

    Rows with the same ``band(row)`` (default: each row alone) form a band; a chunk is a
    run of at most ``max_cells`` consecutive columns of one band (columns that hold a
    cell in any of its rows), with its cells in row-major order.
    """
    bands: dict[int, list[Cell]] = {}
    for cell in sorted(set(cells)):
        bands.setdefault(band(cell[0]) if band else cell[0], []).append(cell)
    chunks: list[list[Cell]] = []
    for members in bands.values():
        runs: list[list[int]] = []
        for col in sorted({c for _, c in members}):
            if runs and runs[-1][-1] + 1 == col and len(runs[-1]) < max_cells:
                runs[-1].append(col)
            else:
                runs.append([col])
        chunks += [[cell for cell in members if run[0] <= cell[1] <= run[-1]] for run in runs]
    return chunks


def tile_bands(grid: PatchGrid) -> Callable[[int], int] | None:
    """Band of a grid row: the stored tile row its patches start in (``None`` when the
    level's tile size is unknown). A band read as one region assembles each tile once
    instead of once per patch row that crosses it (fewer, larger region reads)."""
    tile = grid.raster.level.tile_height
    if tile <= 0:
        return None
    scale = grid.raster.scale

    def band(row: int) -> int:
        return math.floor((row * grid.stride - grid.margin) * scale / tile)

    return band


def _read_chunk(slide: Slide, grid: PatchGrid, run: Sequence[Cell]) -> np.ndarray:
    """Read one chunk as a ``(n, patch, patch, 3)`` array (one region read, then cut)."""
    r0, r1 = min(r for r, _ in run), max(r for r, _ in run)
    c0, c1 = min(c for _, c in run), max(c for _, c in run)
    x, y = grid.origin((r0, c0))
    width, height = (c1 - c0) * grid.stride + grid.patch, (r1 - r0) * grid.stride + grid.patch
    region = slide.read(grid.raster, x, y, width, height)
    p, s = grid.patch, grid.stride
    return np.stack([region[(r - r0) * s : (r - r0) * s + p, (c - c0) * s : (c - c0) * s + p] for r, c in run])


def _read_ahead(
    slide: Slide,
    grid: PatchGrid,
    runs: Sequence[Sequence[Cell]],
    workers: int,
    stats: StreamStats,
) -> Iterator[tuple[Sequence[Cell], np.ndarray]]:
    """Yield decoded runs in order while up to ``2 * workers`` further reads are running."""

    lock = threading.Lock()

    def timed(run: Sequence[Cell]) -> np.ndarray:
        start = time.perf_counter()
        out = _read_chunk(slide, grid, run)
        with lock:
            stats.read_s += time.perf_counter() - start
        return out

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wsi-read") as pool:
        pending: deque[tuple[Sequence[Cell], Future[np.ndarray]]] = deque()
        queue = iter(runs)
        for run in queue:
            pending.append((run, pool.submit(timed, run)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            run, future = pending.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(timed, nxt)))
            yield run, future.result()


def predict_cells(
    slide: Slide,
    grid: PatchGrid,
    cells: Iterable[Cell],
    model: PatchModel,
    sink: Callable[[Sequence[Cell], np.ndarray], None],
    *,
    batch_size: int = 32,
    workers: int = 2,
    max_run: int = 16,
) -> StreamStats:
    """Run ``model`` on the patches of ``cells`` and hand each batch's output to ``sink``.

    Parameters
    ----------
    slide, grid
        Where the patches come from.
    cells
        Grid cells to predict (any order; duplicates are ignored).
    model
        Batched predictor; called in this thread while reads continue in the pool.
    sink
        ``sink(cells, outputs)`` with ``outputs[i]`` the prediction for ``cells[i]``.
    batch_size, workers, max_run
        Patches per model call, reader threads, most columns of patches read at once.

    Returns
    -------
    StreamStats
        Patch/batch counts and time spent reading (summed over threads) and predicting.
    """
    stats = StreamStats()
    runs = _chunks(cells, max_run, tile_bands(grid))
    for batch_cells, parts in _batches(_read_ahead(slide, grid, runs, max(workers, 1), stats), batch_size, stats):
        start = time.perf_counter()
        out = np.asarray(model.predict(np.concatenate(parts)))
        stats.infer_s += time.perf_counter() - start
        stats.batches += 1
        sink(batch_cells, out)
    return stats


def _batches(
    reads: Iterable[tuple[Sequence[Cell], np.ndarray]], batch_size: int, stats: StreamStats
) -> Iterator[tuple[list[Cell], list[np.ndarray]]]:
    """Regroup the runs of patches read into model batches of ``batch_size`` (the last one
    may be smaller), counting ``stats.patches``. A batch is yielded as soon as it is full,
    so the model runs while the next runs are read."""
    buf_cells: list[Cell] = []
    buf: list[np.ndarray] = []
    for run, patches in reads:
        k = 0
        while k < len(run):
            take = min(batch_size - len(buf_cells), len(run) - k)
            buf_cells.extend(run[k : k + take])
            buf.append(patches[k : k + take])
            stats.patches += take
            k += take
            if len(buf_cells) >= batch_size:
                yield buf_cells, buf
                buf_cells, buf = [], []
    if buf_cells:
        yield buf_cells, buf
