"""WSI ground truth: the annotation formats pathologists have, as a tumour mask at any µm/px.

* ASAP XML (the CAMELYON format): ``Annotation`` polygons with ``Coordinate X= Y=`` in
  level-0 pixels; groups ``_2`` / "exclusion" are holes, every other group is tumour.
* QuPath GeoJSON: ``Polygon`` / ``MultiPolygon`` features in level-0 pixels (inner rings are
  holes); a feature counts when it has no classification or its classification name says
  tumour / tumor / metastasis.
* A PNG/TIFF mask (non-zero = tumour) at a stated µm/px: ``mask_8mpp.png`` (``8`` µm/px in
  the name) or ``mask_mpp`` in labels.csv. Its size must fit the slide at that µm/px.

:class:`WsiTruth` rasterises polygons directly at the resolution asked for (pixel centres
inside the polygon) and resamples a mask by nearest neighbour, so patch-level and Dice
grids come from the same annotation.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.evaluate.cases import CaseError

__all__ = ["WsiTruth", "read_wsi_truth"]

_MPP_IN_NAME = re.compile(r"(\d+(?:\.\d+)?)\s*(?:mpp|um|µm)", re.IGNORECASE)
_TUMOUR_WORDS = ("tumo", "metast", "cancer", "carcinoma")
Ring = np.ndarray  # (n, 2) level-0 pixel x, y


@dataclass
class WsiTruth:
    """A slide's tumour annotation.

    Attributes
    ----------
    polygons
        ``(outer ring, [holes])`` in level-0 pixels (from XML / GeoJSON).
    mask, mask_mpp
        A raster mask and its µm/px (from PNG/TIFF).
    source
        File name, for messages.
    """

    source: str
    polygons: list[tuple[Ring, list[Ring]]] = field(default_factory=list)
    mask: np.ndarray | None = None
    mask_mpp: float = 0.0

    def raster(self, mpp: float, base_mpp: float, size_px: tuple[int, int]) -> np.ndarray:
        """Tumour mask at ``mpp`` µm/px covering level 0 (``size_px`` = width, height at ``base_mpp``).

        Shape ``(ceil(height·base_mpp/mpp), ceil(width·base_mpp/mpp))``; pixel ``(r, c)`` is
        tumour when its centre is.

        Raises
        ------
        CaseError
            A mask whose size does not fit the slide at its µm/px.
        """
        scale = base_mpp / mpp
        shape = (math.ceil(size_px[1] * scale - 1e-9), math.ceil(size_px[0] * scale - 1e-9))
        if self.mask is not None:
            return self._resampled(mpp, base_mpp, size_px, shape)
        from skimage.draw import polygon

        out = np.zeros(shape, dtype=bool)
        for outer, holes in self.polygons:  # pixel centres (c + 0.5, r + 0.5) inside the ring
            for ring, value in ((outer, True), *((h, False) for h in holes)):
                rows, cols = polygon(ring[:, 1] * scale - 0.5, ring[:, 0] * scale - 0.5, shape)  # type: ignore[no-untyped-call]
                out[rows, cols] = value
        return out

    def _resampled(self, mpp: float, base_mpp: float, size_px: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        assert self.mask is not None
        expect = (size_px[1] * base_mpp / self.mask_mpp, size_px[0] * base_mpp / self.mask_mpp)
        if any(abs(n - e) > 1.0 + 0.01 * e for n, e in zip(self.mask.shape, expect, strict=True)):
            raise CaseError(
                f"ground truth {self.source}: {self.mask.shape[1]}x{self.mask.shape[0]} px at {self.mask_mpp:g} µm/px "
                f"does not cover the slide ({size_px[0] * base_mpp / 1000:.2f} x "
                f"{size_px[1] * base_mpp / 1000:.2f} mm; "
                f"expected about {expect[1]:.0f}x{expect[0]:.0f} px) — another slide or another µm/px")
        rows = np.minimum(((np.arange(shape[0]) + 0.5) * mpp / self.mask_mpp).astype(int), self.mask.shape[0] - 1)
        cols = np.minimum(((np.arange(shape[1]) + 0.5) * mpp / self.mask_mpp).astype(int), self.mask.shape[1] - 1)
        return np.asarray(self.mask[np.ix_(rows, cols)], dtype=bool)


def _asap(path: Path) -> WsiTruth:
    root = ET.parse(path).getroot()
    truth = WsiTruth(path.name)
    tumour: list[Ring] = []
    holes: list[Ring] = []
    for ann in root.iter("Annotation"):
        coords = sorted(ann.iter("Coordinate"), key=lambda c: int(float(c.get("Order", "0"))))
        ring = np.array([[float(c.get("X", "nan")), float(c.get("Y", "nan"))] for c in coords])
        if len(ring) < 3 or np.isnan(ring).any():
            continue
        group = (ann.get("PartOfGroup") or "").lower()
        (holes if group == "_2" or "exclu" in group else tumour).append(ring)
    truth.polygons = [(ring, holes) for ring in tumour]
    return truth


def _is_tumour(feature: dict[str, Any]) -> bool:
    props = feature.get("properties") or {}
    cls = props.get("classification") or props.get("class")
    name = (cls.get("name", "") if isinstance(cls, dict) else str(cls or "")).lower()
    return not name or any(word in name for word in _TUMOUR_WORDS)


def _geojson(path: Path) -> WsiTruth:
    data = json.loads(path.read_text(encoding="utf-8"))
    features = data.get("features", []) if isinstance(data, dict) else data
    if isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    truth = WsiTruth(path.name)
    for feature in features:
        geometry = feature.get("geometry") or {}
        if not _is_tumour(feature):
            continue
        coords = geometry.get("coordinates") or []
        kind = geometry.get("type")
        for rings in [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []:
            arrays = [np.asarray(r, dtype=float)[:, :2] for r in rings if len(r) >= 3]
            if arrays:
                truth.polygons.append((arrays[0], arrays[1:]))
    return truth


def _mask(path: Path, mpp: float | None) -> WsiTruth:
    from PIL import Image

    if mpp is None:
        found = _MPP_IN_NAME.search(path.stem)
        if found is None:
            raise CaseError(f"ground truth {path.name}: state its µm/px in the name (mask_8mpp.png) "
                            "or in the mask_mpp column of labels.csv")
        mpp = float(found.group(1))
    with Image.open(path) as image:
        array = np.asarray(image.convert("L")) > 0
    return WsiTruth(path.name, mask=array, mask_mpp=mpp)


def read_wsi_truth(path: Path, mask_mpp: float | None = None) -> WsiTruth:
    """Read a WSI annotation (see the module docstring).

    Raises
    ------
    CaseError
        Unreadable or an unknown format.
    """
    name = path.name.lower()
    try:
        if name.endswith(".xml"):
            return _asap(path)
        if name.endswith((".geojson", ".json")):
            return _geojson(path)
        if name.endswith((".png", ".tif", ".tiff")):
            return _mask(path, mask_mpp)
    except CaseError:
        raise
    except Exception as exc:  # XML, JSON and image parsers raise many types
        raise CaseError(f"cannot read ground truth {path.name}: {type(exc).__name__}: {exc}") from exc
    raise CaseError(f"{path.name} is not a WSI ground truth: use ASAP XML, QuPath GeoJSON or a PNG/TIFF mask")
