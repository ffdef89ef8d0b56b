"""Tissue detection on a low-resolution image of the slide.

Brightfield tissue is coloured, glass is white or grey: Otsu's threshold on the HSV
saturation separates them (with a floor so that a blank slide stays blank), then a
closing, hole filling and removal of specks clean the mask. Only patches that overlap
tissue are sent to the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["TissueMap", "cell_fraction", "detect_tissue", "fill_holes", "otsu_threshold", "saturation"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueMap:
    """Tissue mask of the whole slide at a low resolution.

    Attributes
    ----------
    mask
        Boolean ``(rows, cols)``; True = tissue.
    mpp
        µm per mask pixel; pixel (0, 0) starts at the slide's total-pixel-matrix origin.
    thumbnail
        The RGB image the mask was computed from (reused for the preview).
    threshold
        The saturation threshold used (0..1).
    """

    mask: np.ndarray
    mpp: float
    thumbnail: np.ndarray
    threshold: float

    @property
    def area_mm2(self) -> float:
        """Tissue area in mm²."""
        return float(self.mask.sum()) * (self.mpp / 1000.0) ** 2


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (0..1) of a uint8 RGB image."""
    # element-wise over the three channels: a reduction along a length-3 last axis is slow
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(r, g), b).astype(np.float32)
    low = np.minimum(np.minimum(r, g), b).astype(np.float32)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)``, by one labelling instead of dilating to
    convergence: background not 4-connected to the border is a hole."""
    labels, _ = ndimage.label(~mask, ndimage.generate_binary_structure(2, 1))
    outside = np.zeros(int(labels.max()) + 1, bool)
    outside[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    outside[0] = False  # label 0 is the foreground
    return np.asarray(~outside[labels])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1] (maximises the between-class variance)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def detect_tissue(
    rgb: np.ndarray,
    mpp: float,
    *,
    min_saturation: float = 0.07,
    min_object_um2: float = 2000.0,
) -> TissueMap:
    """Tissue mask from a low-resolution RGB image.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` uint8 image of the whole slide.
    mpp
        µm per pixel of ``rgb``.
    min_saturation
        Floor for the Otsu threshold: glass never counts as tissue, even on a blank slide.
    min_object_um2
        Tissue fragments smaller than this are dropped (dust, specks).

    Returns
    -------
    TissueMap
    """
    sat = saturation(rgb)
    threshold = max(otsu_threshold(sat), min_saturation)
    mask = sat > threshold
    structure = np.ones((3, 3), bool)
    mask = ndimage.binary_closing(mask, structure, iterations=2, border_value=0)
    mask = fill_holes(mask)
    labels, count = ndimage.label(mask, structure)
    if count:
        sizes = np.bincount(labels.ravel())[1:] * mpp * mpp
        keep = np.concatenate([[False], sizes >= min_object_um2])
        mask = keep[labels]
    logger.info(
        "tissue: threshold %.3f, %d fragment(s), %.2f mm2",
        threshold,
        count,
        float(mask.sum()) * (mpp / 1000) ** 2,
    )
    return TissueMap(mask=mask, mpp=mpp, thumbnail=rgb, threshold=threshold)


def cell_fraction(tissue: TissueMap, cell_um: float, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of tissue in each cell of a grid of ``cell_um``-sized square cells.

    The grid starts at the same origin as the mask; a mask pixel belongs to the cell that
    contains its centre. Cells the mask does not reach get 0.

    Returns
    -------
    numpy.ndarray
        float32 ``shape`` array in [0, 1].
    """
    rows, cols = tissue.mask.shape
    ri = np.minimum(((np.arange(rows) + 0.5) * tissue.mpp // cell_um).astype(int), shape[0])
    ci = np.minimum(((np.arange(cols) + 0.5) * tissue.mpp // cell_um).astype(int), shape[1])
    flat = (ri[:, None] * (shape[1] + 1) + ci[None, :]).ravel()
    size = (shape[0] + 1) * (shape[1] + 1)
    hits = np.bincount(flat, weights=tissue.mask.ravel().astype(float), minlength=size)
    total = np.bincount(flat, minlength=size)
    frac = hits / np.maximum(total, 1)
    return frac.reshape(shape[0] + 1, shape[1] + 1)[: shape[0], : shape[1]].astype(np.float32)
