"""Texture of the synthetic H&E slides: stateless hashing, value noise, nuclei, stain colours.

Every value is a pure function of its position (µm or level-0 pixel index) and a salt
drawn from the slide's seed, so any region renders the same whether read alone or as part
of a larger one. :func:`stroma_rgb` and :func:`tumour_rgb` colour a ``ys × xs`` grid of pixel
centres; :mod:`.slide` decides which pixels are tissue or tumour.

Everything here is synthetic and NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND", "grain", "stroma_rgb", "tumour_rgb"]

BACKGROUND = np.array([243.0, 241.0, 244.0])
_STROMA = np.array([226.0, 158.0, 196.0])
_LYMPH = np.array([62.0, 36.0, 112.0])
_TUMOUR_CYTO = np.array([238.0, 204.0, 228.0])
_TUMOUR_NUC = np.array([168.0, 134.0, 206.0])
_TUMOUR_RIM = np.array([96.0, 62.0, 150.0])
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Stateless hash of integer lattice points to floats in [0, 1)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(salt & 0xFFFFFFFF)
        h ^= h >> np.uint64(31)
        h = (h * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        h ^= h >> np.uint64(29)
        h = (h * np.uint64(0x94D049BB133111EB)) & _MASK64
        h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _lattice(i0: int, j0: int, rows: int, cols: int, salt: int, n: int) -> list[np.ndarray]:
    """``n`` hashed float fields on lattice rows ``j0..j0+rows`` × cols ``i0..i0+cols``."""
    jj, ii = np.mgrid[j0 : j0 + rows, i0 : i0 + cols]
    return [_hash(ii, jj, salt + k) for k in range(n)]


def _value_noise(xs: np.ndarray, ys: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1) on the grid ``ys × xs`` (µm): interpolated lattice values."""
    gx, gy = xs / cell, ys / cell
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    (val,) = _lattice(int(ix[0]), int(iy[0]), int(iy[-1] - iy[0]) + 2, int(ix[-1] - ix[0]) + 2, salt, 1)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    cx, cy = ix - ix[0], iy - iy[0]
    top = val[cy][:, cx] * (1 - fx) + val[cy][:, cx + 1] * fx
    bottom = val[cy + 1][:, cx] * (1 - fx) + val[cy + 1][:, cx + 1] * fx
    return np.asarray(top * (1 - fy[:, None]) + bottom * fy[:, None])


def _nuclei(
    xs: np.ndarray,
    ys: np.ndarray,
    cell: float,
    radius: float,
    density: float,
    salt: int,
    sparse: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Distance to the nearest nucleus centre, in units of its radius, on ``ys × xs`` (µm).

    One candidate nucleus per cell of a ``cell``-µm lattice, jittered, kept with
    probability ``density``; the 3 × 3 neighbouring cells are searched. ``sparse``
    = (noise cell µm, threshold, floor) thins nuclei where a smooth noise is high (sinuses).
    """
    gx, gy = np.floor(xs / cell).astype(np.int64), np.floor(ys / cell).astype(np.int64)
    i0, j0 = int(gx[0]) - 1, int(gy[0]) - 1
    rows, cols = int(gy[-1]) - j0 + 2, int(gx[-1]) - i0 + 2
    jit_x, jit_y, size, keep = _lattice(i0, j0, rows, cols, salt, 4)
    p = np.full((rows, cols), density)
    if sparse is not None:
        noise = _value_noise(
            (np.arange(cols) + i0 + 0.5) * cell,
            (np.arange(rows) + j0 + 0.5) * cell,
            sparse[0],
            salt + 7,
        )
        p = np.clip(density * (1.0 - (noise - sparse[1]) * 3.0), sparse[2], density)
    cen_x = ((np.arange(cols) + i0 + 0.15)[None, :] + 0.7 * jit_x) * cell
    cen_y = ((np.arange(rows) + j0 + 0.15)[:, None] + 0.7 * jit_y) * cell
    inv_r2 = 1.0 / (radius * (0.8 + 0.4 * size)) ** 2
    off = np.where(keep < p, 0.0, 1e9)
    lat = np.stack([cen_x, cen_y, inv_r2, off]).astype(np.float32).reshape(4, -1)
    xs32, ys32 = xs.astype(np.float32)[None, :], ys.astype(np.float32)[:, None]
    best = np.full((ys.size, xs.size), np.inf, dtype=np.float32)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            idx = (gy + dy - j0)[:, None] * cols + (gx + dx - i0)[None, :]
            cx, cy, ir2, of = (np.take(lat[k], idx) for k in range(4))
            np.minimum(best, ((xs32 - cx) ** 2 + (ys32 - cy) ** 2) * ir2 + of, out=best)
    return np.sqrt(best)


def grain(x: int, y: int, width: int, height: int, salt: int) -> np.ndarray:
    """Per-pixel sensor-like noise in [-1, 1) keyed on level-0 pixel indices."""
    jj, ii = np.mgrid[y : y + height, x : x + width]
    return np.asarray(2.0 * _hash(ii, jj, salt) - 1.0)


def stroma_rgb(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """Lymph-node parenchyma: pink stroma, dense lymphocytes, paler sparse sinuses."""
    low = _value_noise(xs, ys, 70.0, seed + 17)
    shade = _value_noise(xs, ys, 20.0, seed + 2)
    sinus = np.clip((low - 0.62) * 3.0, 0.0, 1.0)[..., None]
    base = _STROMA * (0.93 + 0.12 * shade)[..., None]
    base = base + sinus * (250.0 - base) * 0.45
    d = _nuclei(xs, ys, 7.5, 3.0, 0.92, seed + 10, sparse=(70.0, 0.62, 0.12))
    alpha = np.clip((1.1 - d) / 0.25, 0.0, 1.0)[..., None]
    return np.asarray(base * (1.0 - alpha) + _LYMPH * alpha)


def tumour_rgb(xs: np.ndarray, ys: np.ndarray, seed: int) -> np.ndarray:
    """Metastatic carcinoma: pale cytoplasm, large vesicular nuclei with rim and nucleolus."""
    shade = _value_noise(xs, ys, 30.0, seed + 3)
    col = _TUMOUR_CYTO * (0.95 + 0.08 * shade)[..., None]
    d = _nuclei(xs, ys, 16.0, 6.0, 0.9, seed + 20)
    inner = np.clip((1.0 - d) / 0.15, 0.0, 1.0)[..., None]
    rim = np.clip(1.0 - np.abs(d - 0.85) / 0.15, 0.0, 1.0)[..., None]
    nucleolus = np.clip((0.25 - d) / 0.08, 0.0, 1.0)[..., None]
    col = col * (1.0 - inner) + _TUMOUR_NUC * inner
    col = col * (1.0 - rim) + _TUMOUR_RIM * rim
    col = col * (1.0 - nucleolus) + 0.8 * _TUMOUR_RIM * nucleolus
    lymph = np.clip((1.1 - _nuclei(xs, ys, 7.5, 3.0, 0.06, seed + 10)) / 0.25, 0.0, 1.0)
    return np.asarray(col * (1.0 - lymph[..., None]) + _LYMPH * lymph[..., None])
