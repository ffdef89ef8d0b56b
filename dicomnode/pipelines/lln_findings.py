"""Lateral lymph nodes from a label map: per-node measurements and the patient status.

Input is a label map on the :class:`~dicomnode.dicom.volume.Volume` grid (``(z, y, x)``)
and the manifest's ``labels`` / ``thresholds``. Per node (a face-connected component of
the node-positive + node-negative labels):

* model class: majority of positive vs negative voxels (a tie counts as positive);
* station: the region label with most voxels in a small dilation of the node, else the
  nearest region voxel (physical distance), else unknown;
* side: LPS x of the node centroid vs the pelvic midline (+x is patient left). The
  midline is the mean of the left/right midpoints of each bilateral region label, falling
  back to the centre of the volume;
* short and long axis in the acquisition plane (see :mod:`_axes helpers <._slice_axes>`):
  long = max over slices of the largest in-plane diameter, short = max over slices of the
  longest chord perpendicular to that slice's long axis, in mm using PixelSpacing;
* volume (voxels × voxel volume), and the final status = model-positive OR short axis ≥
  threshold, with the reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from dicomnode.dicom.volume import Volume
from dicomnode.errors import PipelineError

__all__ = ["AxisMeasurement", "LabelScheme", "LlnFindings", "NodeFinding", "compute_findings"]

logger = logging.getLogger(__name__)

_FACES = ndimage.generate_binary_structure(3, 1)
_GROW = 2  # voxels of face dilation around a node when looking for its region
_MIN_SIDE_SEPARATION_MM = 20.0  # left/right region blobs closer than this are one side


@dataclass(frozen=True)
class LabelScheme:
    """What the model's label values mean (from the bundle manifest).

    Attributes
    ----------
    regions
        Label value → station name (``internal_iliac``, ``obturator``, ``external_iliac``).
    positive, negative
        Label values of node-positive and node-negative voxels.
    short_axis_positive_mm
        Short axis at or above which a node is called positive.
    """

    regions: Mapping[int, str]
    positive: tuple[int, ...]
    negative: tuple[int, ...]
    short_axis_positive_mm: float = 7.0

    @classmethod
    def from_manifest(cls, labels: Mapping[Any, Any], thresholds: Mapping[str, Any]) -> LabelScheme:
        """Build from ``labels`` and ``thresholds`` of a ``model.yaml``.

        Raises
        ------
        PipelineError
            A label entry is malformed or no node labels are defined.
        """
        regions: dict[int, str] = {}
        classes: dict[str, list[int]] = {"positive": [], "negative": []}
        for key, spec in labels.items():
            value, spec = int(key), dict(spec or {})
            if spec.get("role") == "region" and spec.get("station"):
                regions[value] = str(spec["station"])
            elif spec.get("role") == "node" and spec.get("class") in classes:
                classes[str(spec["class"])].append(value)
            else:
                raise PipelineError(
                    f"model labels: entry {key}: {spec!r} must be {{role: region, station: ...}} "
                    "or {role: node, class: positive|negative}"
                )
        if not classes["positive"] or not classes["negative"]:
            raise PipelineError("model labels: need node labels of class positive and negative")
        threshold = float(thresholds.get("short_axis_positive_mm", 7.0))
        return cls(regions, tuple(classes["positive"]), tuple(classes["negative"]), threshold)


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


@dataclass(frozen=True)
class NodeFinding:
    """Measurements and status of one lymph node."""

    number: int
    tracking_id: str
    n_voxels: int
    volume_mm3: float
    positive_voxels: int
    negative_voxels: int
    model_class: str
    station: str | None
    station_method: str
    side: str
    centroid_lps: tuple[float, float, float]
    short_axis: AxisMeasurement
    long_axis: AxisMeasurement
    positive: bool
    reasons: tuple[str, ...]

    @property
    def key_slice(self) -> int:
        """The slice of the short axis (the measurement that decides the size criterion)."""
        return self.short_axis.slice_index

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "tracking_id": self.tracking_id,
            "status": "positive" if self.positive else "negative",
            "reasons": list(self.reasons),
            "model_class": self.model_class,
            "station": self.station,
            "station_method": self.station_method,
            "side": self.side,
            "short_axis_mm": round(self.short_axis.length_mm, 2),
            "long_axis_mm": round(self.long_axis.length_mm, 2),
            "volume_mm3": round(self.volume_mm3, 1),
            "key_slice": self.key_slice,
            "centroid_lps_mm": [round(v, 2) for v in self.centroid_lps],
        }


@dataclass(frozen=True)
class LlnFindings:
    """All nodes of one series and the patient-level lateral-lymph-node status.

    ``node_map`` (uint16, the volume's ``(z, y, x)`` grid) holds each node's number.
    """

    nodes: tuple[NodeFinding, ...]
    scheme: LabelScheme
    midline_x_lps: float
    midline_method: str
    stations_present: tuple[str, ...]
    node_map: np.ndarray = field(compare=False, repr=False)

    @property
    def lln_positive(self) -> bool:
        """Patient-level status: any node positive."""
        return any(n.positive for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable summary (no patient identifiers)."""
        return {
            "lln_status": "positive" if self.lln_positive else "negative",
            "n_nodes": len(self.nodes),
            "n_positive": sum(n.positive for n in self.nodes),
            "short_axis_threshold_mm": self.scheme.short_axis_positive_mm,
            "midline_x_lps_mm": round(self.midline_x_lps, 2),
            "midline_method": self.midline_method,
            "stations_present": list(self.stations_present),
            "nodes": [n.to_json() for n in self.nodes],
        }


# --------------------------------------------------------------------- in-plane axes


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


def _node_axes(
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


# ------------------------------------------------------------------ station and side


def _region_map(label_map: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Label map with only region labels kept (0 elsewhere)."""
    keep = np.isin(label_map, list(scheme.regions))
    return np.where(keep, label_map, 0)


def _station_by_overlap(regions: np.ndarray, node_map: np.ndarray, number: int, box: tuple[slice, ...]) -> int:
    """Most frequent region label in a small face dilation of the node (0 if none)."""
    padded = tuple(
        slice(max(b.start - _GROW, 0), min(b.stop + _GROW, n)) for b, n in zip(box, regions.shape, strict=True)
    )
    node = node_map[padded] == number
    grown = ndimage.binary_dilation(node, _FACES, iterations=_GROW)
    values = regions[padded][grown & ~node]
    values = values[values > 0]
    if values.size == 0:
        return 0
    labels, counts = np.unique(values, return_counts=True)
    return int(labels[int(np.argmax(counts))])


def _station_by_distance(regions: np.ndarray, node: np.ndarray, spacing: np.ndarray) -> int:
    """Region label of the region voxel nearest (in mm) to any node voxel (0 if none)."""
    from scipy.spatial import cKDTree

    inside = regions > 0
    region_idx = np.argwhere(inside & ~ndimage.binary_erosion(inside, _FACES))  # boundary
    if region_idx.size == 0:
        return 0
    tree = cKDTree(region_idx * spacing)
    dist, nearest = tree.query(np.argwhere(node) * spacing)
    best = region_idx[nearest[int(np.argmin(dist))]]
    return int(regions[tuple(best)])


def _centroid(labels: np.ndarray, value: int, box: tuple[slice, ...]) -> np.ndarray:
    """Mean ``(z, y, x)`` index of the voxels equal to ``value`` inside ``box``."""
    centre: np.ndarray = np.argwhere(labels[box] == value).mean(axis=0) + [b.start for b in box]
    return centre


def _midline(regions: np.ndarray, volume: Volume) -> tuple[float, str]:
    """Patient midline (LPS x) from bilateral region blobs, else the volume centre."""
    midpoints: list[float] = []
    for value in np.unique(regions[regions > 0]):
        blobs, n = ndimage.label(regions == value, _FACES)
        if n < 2:
            continue
        sizes = np.bincount(blobs.ravel())[1:]
        boxes = ndimage.find_objects(blobs)
        xs = sorted(
            float(volume.zyx_to_lps(_centroid(blobs, int(i) + 1, boxes[i]))[0]) for i in np.argsort(sizes)[::-1][:2]
        )
        if xs[1] - xs[0] >= _MIN_SIDE_SEPARATION_MM:
            midpoints.append((xs[0] + xs[1]) / 2)
    if midpoints:
        return float(np.mean(midpoints)), "regions"
    centre = (np.asarray(volume.shape, dtype=float) - 1) / 2
    return float(volume.zyx_to_lps(centre)[0]), "volume-centre"


# ------------------------------------------------------------------------ assembly


def _status(model_class: str, short_mm: float, threshold: float) -> tuple[bool, tuple[str, ...]]:
    """Final status = model-positive OR short axis >= threshold, with the reasons."""
    reasons: tuple[str, ...] = ("model-positive",) if model_class == "positive" else ()
    if short_mm >= threshold:
        reasons += (f"short-axis>={threshold:g}mm",)
    if reasons:
        return True, reasons
    return False, ("model-negative", f"short-axis<{threshold:g}mm")


def _node(number: int, box: tuple[slice, ...], mask: np.ndarray, ctx: _Context) -> NodeFinding:
    labels = ctx.label_map[box][mask]
    n_pos = int(np.isin(labels, ctx.scheme.positive).sum())
    n_neg = int(labels.size - n_pos)
    model_class = "positive" if n_pos >= n_neg else "negative"
    station, method = _station_by_overlap(ctx.regions, ctx.node_map, number, box), "overlap"
    if station == 0:
        node = ctx.node_map == number
        station, method = _station_by_distance(ctx.regions, node, ctx.spacing), "nearest"
    dz, dy, dx = ctx.volume.spacing_zyx
    short, long_ = _node_axes(mask, box[0].start, box[1].start, box[2].start, dy, dx)
    centroid = ctx.volume.zyx_to_lps(_centroid(ctx.node_map, number, box))
    positive, reasons = _status(model_class, short.length_mm, ctx.scheme.short_axis_positive_mm)
    return NodeFinding(
        number=number,
        tracking_id=f"LN-{number}",
        n_voxels=int(mask.sum()),
        volume_mm3=float(mask.sum() * dz * dy * dx),
        positive_voxels=n_pos,
        negative_voxels=n_neg,
        model_class=model_class,
        station=ctx.scheme.regions.get(station) if station else None,
        station_method=method if station else "none",
        side="left" if centroid[0] > ctx.midline else "right",
        centroid_lps=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        short_axis=short,
        long_axis=long_,
        positive=positive,
        reasons=reasons,
    )


@dataclass(frozen=True)
class _Context:
    label_map: np.ndarray
    regions: np.ndarray
    node_map: np.ndarray
    volume: Volume
    scheme: LabelScheme
    spacing: np.ndarray
    midline: float


def compute_findings(label_map: np.ndarray, volume: Volume, scheme: LabelScheme) -> LlnFindings:
    """Find the nodes in ``label_map`` and measure them.

    Parameters
    ----------
    label_map
        Integer labels on the volume grid, ``(z, y, x)`` like ``volume.array``.
    volume
        The source volume (geometry only).
    scheme
        Meaning of the label values and the short-axis threshold.

    Returns
    -------
    LlnFindings
        Nodes numbered 1..N in raster order of their first voxel (deterministic).

    Raises
    ------
    PipelineError
        ``label_map`` is not on the volume grid.
    """
    if label_map.shape != volume.shape:
        raise PipelineError(f"label map shape {label_map.shape} differs from the volume grid {volume.shape}")
    label_map = np.asarray(label_map)
    regions = _region_map(label_map, scheme)
    midline, method = _midline(regions, volume)
    node_map, count = ndimage.label(np.isin(label_map, scheme.positive + scheme.negative), _FACES)
    spacing = np.asarray(volume.spacing_zyx)
    ctx = _Context(label_map, regions, node_map, volume, scheme, spacing, midline)
    boxes = ndimage.find_objects(node_map)
    nodes = tuple(_node(i + 1, box, node_map[box] == i + 1, ctx) for i, box in enumerate(boxes) if box is not None)
    present = tuple(sorted({scheme.regions[int(v)] for v in np.unique(regions) if v}))
    logger.info(
        "%d node(s), %d positive; midline %.1f mm (%s)",
        count,
        sum(n.positive for n in nodes),
        midline,
        method,
    )
    return LlnFindings(nodes, scheme, midline, method, present, node_map.astype(np.uint16))
