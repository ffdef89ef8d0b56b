"""Stream patches from a slide to a model: threaded reads pipelined with batched inference.

Patches of one grid row that are next to each other are read as one region (a "chunk")
by a small thread pool; decoding the next chunks overlaps with inference on the current
batch in the calling thread. Only a bounded number of chunks is in flight, so memory
stays at a few patch rows whatever the slide size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dicomnode.pipelines.wsi_slide import Raster, Slide

__all__ = ["Cell", "PatchGrid", "PatchModel", "StreamStats", "predict_cells"]

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


def _chunks(cells: Iterable[Cell], max_cells: int) -> list[list[Cell]]:
    """Group cells into runs of consecutive columns in one row, at most ``max_cells`` long."""
    runs: list[list[Cell]] = []
    for cell in sorted(set(cells)):
        last = runs[-1] if runs else None
        if last and last[-1][0] == cell[0] and last[-1][1] + 1 == cell[1] and len(last) < max_cells:
            last.append(cell)
        else:
            runs.append([cell])
    return runs


def _read_chunk(slide: Slide, grid: PatchGrid, run: Sequence[Cell]) -> np.ndarray:
    """Read one run as a ``(n, patch, patch, 3)`` array (one region read, then cut)."""
    x, y = grid.origin(run[0])
    width = (len(run) - 1) * grid.stride + grid.patch
    region = slide.read(grid.raster, x, y, width, grid.patch)
    offsets = [k * grid.stride for k in range(len(run))]
    return np.stack([region[:, o : o + grid.patch] for o in offsets])


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
        Patches per model call, reader threads, longest run of patches read at once.

    Returns
    -------
    StreamStats
        Patch/batch counts and time spent reading (summed over threads) and predicting.
    """
    stats = StreamStats()
    runs = _chunks(cells, max_run)
    buf_cells: list[Cell] = []
    buf: list[np.ndarray] = []

    def flush() -> None:
        start = time.perf_counter()
        out = np.asarray(model.predict(np.concatenate(buf)))
        stats.infer_s += time.perf_counter() - start
        stats.batches += 1
        sink(list(buf_cells), out)
        buf_cells.clear()
        buf.clear()

    for run, patches in _read_ahead(slide, grid, runs, max(workers, 1), stats):
        k = 0
        while k < len(run):
            take = min(batch_size - len(buf_cells), len(run) - k)
            buf_cells.extend(run[k : k + take])
            buf.append(patches[k : k + take])
            stats.patches += take
            k += take
            if len(buf_cells) >= batch_size:
                flush()
    if buf_cells:
        flush()
    return stats
