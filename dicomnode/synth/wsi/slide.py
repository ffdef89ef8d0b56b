"""Synthetic slide descriptions and their ground truth: tissue blobs, tumour deposits.

A slide is a handful of numbers drawn from a seed: tissue blobs (an outline with a wobbly
border) and circular tumour deposits of known diameter. :func:`render_region` colours any
level-0 region from them (:mod:`.texture`); :func:`generate_slide` draws a slide and
writes it with :func:`.pyramid.write_pyramid`.

Everything here is synthetic and NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dicomnode.synth.wsi.pyramid import write_pyramid
from dicomnode.synth.wsi.texture import BACKGROUND, grain, stroma_rgb, tumour_rgb

__all__ = ["SyntheticDeposit", "SyntheticSlide", "generate_slide", "render_region"]

logger = logging.getLogger(__name__)

ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0


@dataclass(frozen=True)
class SyntheticDeposit:
    """One circular tumour deposit.

    Attributes
    ----------
    center_mm
        (x, y) in total-pixel-matrix mm from the top-left corner of level 0.
    radius_mm
        Radius in mm.
    """

    center_mm: tuple[float, float]
    radius_mm: float

    @property
    def largest_dimension_mm(self) -> float:
        """Largest dimension (the diameter) in mm."""
        return 2.0 * self.radius_mm

    @property
    def area_mm2(self) -> float:
        """Area in mm²."""
        return math.pi * self.radius_mm**2

    @property
    def category(self) -> str:
        """AJCC class of the deposit alone: ``"itc"``, ``"micro"`` or ``"macro"``."""
        size = self.largest_dimension_mm
        return "itc" if size <= ITC_MAX_MM else "micro" if size <= MICRO_MAX_MM else "macro"


@dataclass(frozen=True)
class _Blob:
    """A tissue piece: ellipse (mm) with a harmonic wobble on its border."""

    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    wobble: tuple[tuple[float, float], ...]  # (amplitude, phase) for harmonics 2, 3, ...

    def touches(self, x_range: np.ndarray, y_range: np.ndarray) -> bool:
        """Whether the box ``x_range × y_range`` (mm) can intersect the blob."""
        reach = max(self.axes) * (1.0 + sum(a for a, _ in self.wobble))
        return bool(
            x_range[0] - reach < self.center[0] < x_range[1] + reach
            and y_range[0] - reach < self.center[1] < y_range[1] + reach
        )

    def inside(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        """Boolean membership of points (broadcast arrays, mm)."""
        dx, dy = x_mm - self.center[0], y_mm - self.center[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = (c * dx + s * dy) / self.axes[0], (-s * dx + c * dy) / self.axes[1]
        theta = np.arctan2(v, u)
        limit = np.ones_like(theta)
        for k, (amp, phase) in enumerate(self.wobble, start=2):
            limit = limit + amp * np.cos(k * theta + phase)
        return np.asarray(u * u + v * v < limit * limit)


@dataclass(frozen=True)
class SyntheticSlide:
    """A synthetic slide written to ``folder`` and its ground truth.

    Attributes
    ----------
    folder
        Folder holding the DICOM files.
    files
        The written VL Whole Slide Microscopy instances (one per pyramid level).
    mpp
        Level-0 pixel spacing in µm/px.
    size_px
        (width, height) of level 0.
    deposits
        The tumour deposits (empty for a node-negative slide).
    seed
        The seed it was generated from.
    """

    folder: Path
    files: list[Path]
    mpp: float
    size_px: tuple[int, int]
    deposits: list[SyntheticDeposit]
    seed: int = 0
    blobs: tuple[_Blob, ...] = field(default=(), repr=False)

    def _grid(self, mpp: float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (mm) of a raster at ``mpp`` covering level 0."""
        scale = self.mpp / mpp
        cols = math.ceil(self.size_px[0] * scale - 1e-9)
        rows = math.ceil(self.size_px[1] * scale - 1e-9)
        return ((np.arange(cols) + 0.5) * mpp / 1000.0, (np.arange(rows) + 0.5) * mpp / 1000.0)

    def mask(self, mpp: float) -> np.ndarray:
        """Ground-truth tumour mask at ``mpp`` µm/px.

        Pixel ``(r, c)`` covers ``[c·mpp, (c+1)·mpp) × [r·mpp, (r+1)·mpp)`` µm of level 0
        and is true when its centre lies in a deposit. Shape is
        ``(ceil(height·mpp0/mpp), ceil(width·mpp0/mpp))``.
        """
        xs, ys = self._grid(mpp)
        out = np.zeros((ys.size, xs.size), dtype=bool)
        for dep in self.deposits:
            (cx, cy), r = dep.center_mm, dep.radius_mm
            c0, c1 = np.searchsorted(xs, [cx - r, cx + r])
            r0, r1 = np.searchsorted(ys, [cy - r, cy + r])
            sub = (xs[None, c0:c1] - cx) ** 2 + (ys[r0:r1, None] - cy) ** 2 < r * r
            out[r0:r1, c0:c1] |= sub
        return out

    def tissue_mask(self, mpp: float) -> np.ndarray:
        """Ground-truth tissue mask (tissue blobs and deposits) at ``mpp`` µm/px."""
        xs, ys = self._grid(mpp)
        out = self.mask(mpp)
        for blob in self.blobs:
            for r in range(0, ys.size, 512):  # row blocks keep float temporaries small
                out[r : r + 512] |= blob.inside(xs[None, :], ys[r : r + 512, None])
        return out


def render_region(slide: SyntheticSlide, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Render a level-0 region of a synthetic slide.

    Parameters
    ----------
    slide
        The slide description (only ``seed``, ``mpp``, ``blobs`` and ``deposits`` are used,
        so this also works before the DICOM files exist).
    x, y
        Level-0 pixel of the region's top-left corner.
    width, height
        Region size in pixels.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.
    """
    xs = (np.arange(x, x + width) + 0.5) * slide.mpp
    ys = (np.arange(y, y + height) + 0.5) * slide.mpp
    x_mm, y_mm = xs[None, :] / 1000.0, ys[:, None] / 1000.0
    tissue = np.zeros((height, width), dtype=bool)
    for blob in slide.blobs:
        if blob.touches(x_mm[0, [0, -1]], y_mm[[0, -1], 0]):
            tissue |= blob.inside(x_mm, y_mm)
    tumour = np.zeros((height, width), dtype=bool)
    for dep in slide.deposits:
        (cx, cy), r = dep.center_mm, dep.radius_mm
        tumour |= (x_mm - cx) ** 2 + (y_mm - cy) ** 2 < r * r
    img = np.broadcast_to(BACKGROUND, (height, width, 3)).copy()
    if tissue.any():
        img = np.where(tissue[..., None], stroma_rgb(xs, ys, slide.seed), img)
    if tumour.any():
        img = np.where(tumour[..., None], tumour_rgb(xs, ys, slide.seed), img)
    img += 5.0 * grain(x, y, width, height, slide.seed + 101)[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _random_blobs(rng: np.random.Generator, size_mm: tuple[float, float]) -> tuple[_Blob, ...]:
    """One lymph-node section filling most of the slide, sometimes a small second piece."""
    w, h = size_mm

    def wobble() -> tuple[tuple[float, float], ...]:
        return tuple((float(rng.uniform(0.01, 0.04)), float(rng.uniform(0, 2 * math.pi))) for _ in range(4))

    main = _Blob(
        center=(w * float(rng.uniform(0.48, 0.52)), h * float(rng.uniform(0.48, 0.52))),
        axes=(w * float(rng.uniform(0.38, 0.42)), h * float(rng.uniform(0.36, 0.40))),
        angle=float(rng.uniform(-0.3, 0.3)),
        wobble=wobble(),
    )
    if rng.random() >= 0.5:
        return (main,)
    small = _Blob(
        center=(w * 0.9, h * 0.1),
        axes=(w * 0.06, h * 0.05),
        angle=float(rng.uniform(0, math.pi)),
        wobble=wobble(),
    )
    return (main, small)


def _fits(blob: _Blob, dep: SyntheticDeposit, others: list[SyntheticDeposit]) -> bool:
    """Deposit lies inside the blob (with a margin) and keeps away from the others."""
    (cx, cy), r = dep.center_mm, dep.radius_mm + 0.05
    ang = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    pts_x, pts_y = np.append(cx + r * np.cos(ang), cx), np.append(cy + r * np.sin(ang), cy)
    if not bool(np.all(blob.inside(pts_x, pts_y))):
        return False
    return all(math.dist(dep.center_mm, o.center_mm) > dep.radius_mm + o.radius_mm + 0.15 for o in others)


def _random_deposits(rng: np.random.Generator, blob: _Blob) -> list[SyntheticDeposit]:
    """An ITC (0.10–0.19 mm), a micrometastasis (0.35–1.2 mm), sometimes a second micro."""
    diameters = [float(rng.uniform(0.10, 0.19)), float(rng.uniform(0.35, 1.2))]
    if rng.random() < 0.5:
        diameters.append(float(rng.uniform(0.25, 0.6)))
    placed: list[SyntheticDeposit] = []
    for diameter in sorted(diameters, reverse=True):
        for _ in range(500):
            off = rng.uniform(-1.0, 1.0, 2) * np.asarray(blob.axes)
            dep = SyntheticDeposit(
                (
                    round(blob.center[0] + float(off[0]), 4),
                    round(blob.center[1] + float(off[1]), 4),
                ),
                round(diameter / 2.0, 4),
            )
            if _fits(blob, dep, placed):
                placed.append(dep)
                break
        else:
            raise ValueError(f"cannot place a {diameter:.2f} mm deposit: 'size_mm' too small")
    return placed


def _check_arguments(folder: Path, size_mm: tuple[float, float], mpp: float, tile_size: int) -> None:
    """Refuse out-of-range arguments of :func:`generate_slide`, naming the parameter."""
    if min(size_mm) <= 0 or mpp <= 0:
        raise ValueError(f"'size_mm' {size_mm} and 'mpp' {mpp} must be positive")
    if tile_size < 16 or tile_size % 16:
        raise ValueError(f"'tile_size' must be a multiple of 16, got {tile_size}")
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"'folder' {folder} is not empty: a slide needs a folder of its own")


def _deposits(
    rng: np.random.Generator,
    blob: _Blob,
    given: Sequence[tuple[float, float, float]] | None,
    size_mm: tuple[float, float],
) -> list[SyntheticDeposit]:
    """The ``given`` ``(x_mm, y_mm, diameter_mm)`` deposits, or a seeded set in ``blob``."""
    if given is None:
        placed = _random_deposits(rng, blob)
    else:
        placed = [SyntheticDeposit((float(x), float(y)), float(d) / 2.0) for x, y, d in given]
    for dep in placed:
        if not (0 <= dep.center_mm[0] <= size_mm[0] and 0 <= dep.center_mm[1] <= size_mm[1]):
            raise ValueError(f"'deposits': centre {dep.center_mm} lies outside {size_mm} mm")
    return placed


def _draw(
    folder: Path,
    seed: int,
    size_mm: tuple[float, float],
    mpp: float,
    deposits: Sequence[tuple[float, float, float]] | None,
) -> SyntheticSlide:
    """The slide's description and ground truth, all drawn from ``seed`` (no files yet)."""
    rng = np.random.default_rng(seed)
    blobs = _random_blobs(rng, size_mm)
    placed = _deposits(rng, blobs[0], deposits, size_mm)
    size_px = (round(size_mm[0] * 1000 / mpp), round(size_mm[1] * 1000 / mpp))
    return SyntheticSlide(folder, [], mpp, size_px, placed, seed=seed, blobs=blobs)


def generate_slide(
    folder: Path,
    seed: int,
    *,
    size_mm: tuple[float, float] = (4.0, 4.0),
    mpp: float = 0.5,
    deposits: Sequence[tuple[float, float, float]] | None = None,
    tile_size: int = 256,
) -> SyntheticSlide:
    """Generate a synthetic H&E lymph-node slide and write it as VL WSI DICOM.

    Parameters
    ----------
    folder
        Output folder (created; must be new or empty).
    seed
        Everything (tissue shape, deposits when not given, texture, UIDs) follows from it.
    size_mm
        (width, height) of the slide's total pixel matrix in mm.
    mpp
        Level-0 pixel spacing in µm/px.
    deposits
        ``(x_mm, y_mm, diameter_mm)`` per tumour deposit; ``None`` draws a seeded set with
        one ITC-sized (≤ 0.2 mm) and one or two micro-sized (0.2–2 mm) deposits; ``[]``
        gives a node-negative slide.
    tile_size
        Tile edge in pixels (multiple of 16).

    Returns
    -------
    SyntheticSlide
        Paths, geometry and ground truth.

    Raises
    ------
    ValueError
        A parameter is out of range (the message names it).
    """
    folder = Path(folder)
    _check_arguments(folder, size_mm, mpp, tile_size)
    slide = _draw(folder, seed, size_mm, mpp, deposits)
    folder.mkdir(parents=True, exist_ok=True)
    files = write_pyramid(folder, lambda x, y, w, h: render_region(slide, x, y, w, h), slide.size_px, mpp, seed,
                          tile_size=tile_size)
    logger.info("synthetic slide seed=%d %dx%d px, %d deposit(s), %d file(s) in %s",
                seed, *slide.size_px, len(slide.deposits), len(files), folder)
    return replace(slide, files=files)
