"""Training and evaluation data: synthetic slides written as DICOM and read back.

Patches come from the written VL WSI pyramid (JPEG tiles, wsidicom's downsampled levels),
so the models see what the ``wsi-two-stage`` pipeline will read, not the renderer's
clean output. Ground truth comes from the generator (``SyntheticSlide.mask``).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from wsidicom import WsiDicom

from dicomnode.synth.wsi import SyntheticSlide, generate_slide

logger = logging.getLogger("wsi_ln_demo.data")


@dataclass
class SlideArrays:
    """One slide's image, tumour mask and tissue mask at one µm/px."""

    slide: SyntheticSlide
    mpp: float
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    tissue: np.ndarray  # (H, W) bool


def make_slide(work: Path, seed: int, size_mm: float, negative: bool) -> SyntheticSlide:
    """Generate (or reuse from ``work``) a synthetic slide for ``seed``."""
    folder = work / f"slide-{seed}{'-neg' if negative else ''}"
    cached = folder / "slide.pkl"
    if cached.is_file():
        return pickle.loads(cached.read_bytes())  # our own cache file, written below
    slide = generate_slide(folder / "dicom", seed, size_mm=(size_mm, size_mm), deposits=[] if negative else None)
    cached.write_bytes(pickle.dumps(slide))
    return slide


def read_level(folder: Path, mpp: float) -> np.ndarray:
    """The whole pyramid level at ``mpp`` µm/px as an (H, W, 3) uint8 array."""
    with WsiDicom.open(folder) as wsi:
        for level in wsi.levels:
            if abs(level.mpp.width - mpp) / mpp < 0.01:
                region = wsi.read_region((0, 0), level.level, (level.size.width, level.size.height))
                return np.asarray(region.convert("RGB"))
    raise ValueError(f"{folder}: no pyramid level at {mpp} µm/px")


def slide_arrays(slide: SyntheticSlide, mpp: float) -> SlideArrays:
    """Read a slide's level at ``mpp`` and its ground truth on the same grid."""
    image = read_level(slide.folder, mpp)
    mask, tissue = slide.mask(mpp), slide.tissue_mask(mpp)
    rows, cols = min(image.shape[0], mask.shape[0]), min(image.shape[1], mask.shape[1])
    return SlideArrays(slide, mpp, image[:rows, :cols], mask[:rows, :cols], tissue[:rows, :cols])


def box_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of true pixels in every ``size``² window (indexed by its top-left pixel)."""
    ii = np.pad(mask.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    return total / float(size * size)


def _pick(rng: np.random.Generator, where: np.ndarray, n: int) -> np.ndarray:
    idx = np.flatnonzero(where)
    if idx.size == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(idx, size=n, replace=idx.size < n)


def classifier_samples(arr: SlideArrays, size: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patches and labels (tumour fraction > 20 %): half positive, the rest tissue/glass."""
    frac, tis = box_fraction(arr.mask, size), box_fraction(arr.tissue, size)
    pos = _pick(rng, frac > 0.2, n // 2)
    border = _pick(rng, (frac > 0) & (frac <= 0.2), n // 10)
    neg = _pick(rng, (frac == 0) & (tis > 0.05), n - pos.size - border.size - n // 10)
    glass = _pick(rng, tis <= 0.05, n // 10)
    idx = np.concatenate([pos, border, neg, glass])
    rows, cols = np.unravel_index(idx, frac.shape)
    patches = np.stack([arr.image[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)])
    return patches, frac[rows, cols] > 0.2


def segmenter_samples(arr: SlideArrays, size: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tiles and masks: 60 % containing tumour, the rest anywhere on tissue."""
    frac, tis = box_fraction(arr.mask, size), box_fraction(arr.tissue, size)
    idx = np.concatenate([_pick(rng, frac > 0.01, int(n * 0.6)), _pick(rng, tis > 0.02, n - int(n * 0.6))])
    rows, cols = np.unravel_index(idx, frac.shape)
    tiles = np.stack([arr.image[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)])
    masks = np.stack([arr.mask[r : r + size, c : c + size] for r, c in zip(rows, cols, strict=True)])
    return tiles, masks
