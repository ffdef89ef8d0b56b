"""Short and long axis of a lymph node in the acquisition plane.

Long axis = max over slices of the largest in-plane diameter (max Feret diameter of the
node's outline); short axis = max over slices of the longest chord perpendicular to that
slice's long axis. Lengths are in mm using PixelSpacing; endpoints are DICOM image
coordinates, so that the SR can draw them on the source image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AxisMeasurement", "node_axes"]


@dataclass(frozen=True)
class AxisMeasurement:
    """One in-plane diameter on one slice.

    Attributes
    ----------
    length_mm
        Length in mm.
    slice_index
        z index in the volume (``Volume.sources[slice_index]`` is the image).
    start, end
        Endpoints as DICOM image coordinates (column, row): the top-left corner of the
        image is (0, 0), so the centre of pixel (c, r) is (c + 0.5, r + 0.5).
    """

    length_mm: float
    slice_index: int
    start: tuple[float, float]
    end: tuple[float, float]


def _contour_mm(mask2d: np.ndarray, dy: float, dx: float) -> list[np.ndarray]:
    """Iso-0.5 contours of a 2D mask as ``(N, 2)`` (x, y) mm arrays (pixel centre = index)."""
    from skimage.measure import find_contours

    padded = np.pad(mask2d.astype(np.float32), 1)
    return [(c[:, ::-1] - 1.0) * (dx, dy) for c in find_contours(padded, 0.5)]  # type: ignore[no-untyped-call]


def _max_feret(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest distance between two outline points (on the convex hull)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # collinear or too few points
        hull = points
    d2 = ((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return float(np.sqrt(d2[i, j])), hull[i], hull[j]


def _longest_perpendicular_chord(
    contours: list[np.ndarray], a: np.ndarray, b: np.ndarray, step: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest inside chord perpendicular to segment ``a``→``b`` (even-odd rule)."""
    u = (b - a) / max(float(np.linalg.norm(b - a)), 1e-9)
    v = np.array([-u[1], u[0]])
    p0 = np.concatenate([c[:-1] for c in contours]) - a
    p1 = np.concatenate([c[1:] for c in contours]) - a
    s0, s1, t0, t1 = p0 @ u, p1 @ u, p0 @ v, p1 @ v
    lines = np.arange(min(s0.min(), s1.min()), max(s0.max(), s1.max()) + step, step)
    lo, hi = np.minimum(s0, s1)[None, :], np.maximum(s0, s1)[None, :]
    hit = (lines[:, None] >= lo) & (lines[:, None] < hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (lines[:, None] - s0[None, :]) / (s1 - s0)[None, :]
    t = np.where(hit, t0[None, :] + frac * (t1 - t0)[None, :], np.nan)
    best = (0.0, a, a)
    for k in range(lines.size):
        ts = np.sort(t[k][~np.isnan(t[k])])
        for lo_t, hi_t in zip(ts[0::2], ts[1::2], strict=False):
            if hi_t - lo_t > best[0]:
                base = a + lines[k] * u
                best = (float(hi_t - lo_t), base + lo_t * v, base + hi_t * v)
    return best


def _slice_axes(
    mask2d: np.ndarray, dy: float, dx: float
) -> tuple[float, np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """Long axis (max Feret) and the longest chord perpendicular to it, on one slice."""
    contours = _contour_mm(mask2d, dy, dx)
    points = np.concatenate(contours)
    long_mm, a, b = _max_feret(points)
    if long_mm <= 0:
        return 0.0, a, b, 0.0, a, b
    short_mm, c, d = _longest_perpendicular_chord(contours, a, b, min(dx, dy) / 4)
    return long_mm, a, b, short_mm, c, d


def _to_image(point_mm: np.ndarray, dy: float, dx: float) -> tuple[float, float]:
    """(x, y) mm with pixel centre at index → DICOM (column, row) image coordinates."""
    return (round(float(point_mm[0] / dx) + 0.5, 3), round(float(point_mm[1] / dy) + 0.5, 3))


def node_axes(
    mask: np.ndarray, z0: int, y0: int, x0: int, dy: float, dx: float
) -> tuple[AxisMeasurement, AxisMeasurement]:
    """Short and long axis of a node (cropped mask at offset ``z0, y0, x0``)."""
    long_best: AxisMeasurement | None = None
    short_best: AxisMeasurement | None = None
    offset = np.array([x0 * dx, y0 * dy])
    for k in range(mask.shape[0]):
        if not mask[k].any():
            continue
        long_mm, a, b, short_mm, c, d = _slice_axes(mask[k], dy, dx)
        if long_best is None or long_mm > long_best.length_mm:
            ends = (_to_image(a + offset, dy, dx), _to_image(b + offset, dy, dx))
            long_best = AxisMeasurement(long_mm, z0 + k, *ends)
        if short_best is None or short_mm > short_best.length_mm:
            ends = (_to_image(c + offset, dy, dx), _to_image(d + offset, dy, dx))
            short_best = AxisMeasurement(short_mm, z0 + k, *ends)
    assert long_best is not None and short_best is not None  # mask is non-empty
    return short_best, long_best
