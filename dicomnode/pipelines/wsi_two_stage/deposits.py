"""Tumour deposits from the segmenter's probability mask, and the slide's AJCC class.

A deposit is an 8-connected component of ``prob ≥ tumour_probability``. Its largest
dimension is the maximum Feret diameter (largest distance between two pixel centres of the
component, plus one pixel, so a single pixel measures one pixel); its area is the pixel
count. The slide is classed by its largest deposit: none, isolated tumour cells
(≤ ``itc_max_mm``), micrometastasis (≤ ``micro_max_mm``) or macrometastasis (AJCC).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import approximate_polygon, find_contours

__all__ = ["Deposit", "find_deposits", "max_feret_px", "outline_px", "slide_class"]

logger = logging.getLogger(__name__)

_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Deposit:
    """One connected tumour region.

    Attributes
    ----------
    number
        1-based, deposits sorted by largest dimension (largest first).
    largest_dimension_mm, area_mm2
        Maximum Feret diameter and area.
    max_probability
        Highest segmenter probability inside the deposit.
    outline
        Closed polygon ``(N, 2)`` of (x, y) in mask *pixel-edge* coordinates: (0, 0) is the
        top-left corner of mask pixel (0, 0), one unit = one mask pixel.
    centroid
        (x, y) of the pixel centres' mean, same coordinates as ``outline``.
    """

    number: int
    largest_dimension_mm: float
    area_mm2: float
    max_probability: float
    outline: np.ndarray
    centroid: tuple[float, float]


def max_feret_px(mask: np.ndarray) -> float:
    """Maximum Feret diameter of a (single-component) boolean mask, in pixels."""
    if not mask.any():
        return 0.0
    edge = mask & ~ndimage.binary_erosion(mask, _EIGHT, border_value=0)
    pts = np.argwhere(edge).astype(np.float64)
    if len(pts) > 3:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear: the extremes along each axis hold the diameter
            pts = pts[[pts[:, 0].argmin(), pts[:, 0].argmax(), pts[:, 1].argmin(), pts[:, 1].argmax()]]
    diff = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max()) + 1.0


def outline_px(mask: np.ndarray) -> np.ndarray:
    """Closed outer outline of a single-component mask, (x, y) pixel-edge coordinates.

    Marching squares at level 0.5 on the padded mask (the curve runs half-way between
    inside and outside pixel centres), simplified within a quarter pixel.
    """
    padded = np.pad(mask.astype(np.float32), 1)
    contours = find_contours(padded, 0.5)  # type: ignore[no-untyped-call]
    ring = max(contours, key=len)
    ring = approximate_polygon(ring, tolerance=0.25)  # type: ignore[no-untyped-call]
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    # (row, col) of padded pixel centres -> (x, y) edges of the unpadded mask
    return np.stack([ring[:, 1] - 0.5, ring[:, 0] - 0.5], axis=1)


def find_deposits(prob: np.ndarray, mpp: float, threshold: float) -> list[Deposit]:
    """Connected components of ``prob ≥ threshold`` as :class:`Deposit`, largest first.

    Parameters
    ----------
    prob
        Probability mask; pixel (0, 0) starts at the slide origin.
    mpp
        µm per mask pixel.
    threshold
        Tumour probability threshold.
    """
    labels, count = ndimage.label(prob >= threshold, _EIGHT)
    found: list[tuple[float, float, float, np.ndarray, tuple[float, float]]] = []
    px_mm = mpp / 1000.0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        comp = labels[box] == index
        r0, c0 = box[0].start, box[1].start
        ys, xs = np.nonzero(comp)
        ring = outline_px(comp) + np.array([c0, r0], float)
        centroid = (float(xs.mean() + c0 + 0.5), float(ys.mean() + r0 + 0.5))
        found.append(
            (
                max_feret_px(comp) * px_mm,
                float(comp.sum()) * px_mm * px_mm,
                float(prob[box][comp].max()),
                ring,
                centroid,
            )
        )
    found.sort(key=lambda d: (-d[0], -d[1]))
    logger.info("deposits: %d component(s) at p >= %.2f", count, threshold)
    return [Deposit(n, *d) for n, d in enumerate(found, start=1)]


def slide_class(largest_mm: float, itc_max_mm: float, micro_max_mm: float) -> str:
    """AJCC class by the largest deposit: ``none``, ``itc``, ``micro`` or ``macro``."""
    if largest_mm <= 0.0:
        return "none"
    if largest_mm <= itc_max_mm:
        return "itc"
    return "micro" if largest_mm <= micro_max_mm else "macro"
